"""kctl version [--format json]"""

from __future__ import annotations

import argparse
import json

from kettle.api import kettle_pb as pb
from kettle.cli.common import out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "client and server versions"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")


def run(client: Client, a: argparse.Namespace) -> int:
    import kettle

    v = client.call("Version", pb.VersionRequest(), pb.VersionResponse)
    if a.format == "json":
        info = {"client": kettle.__version__, "server": v.version, "api": v.api_version}
        out(json.dumps(info, indent=2))
    else:
        out(f"Client: {kettle.__version__}\nServer: {v.version} (api {v.api_version})")
    return 0
