"""kctl info [--format json]"""

from __future__ import annotations

import argparse
import json

from kettle.api import kettle_pb as pb
from kettle.api.convert import to_dict
from kettle.cli.common import out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "what kettled runs and where"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")


def run(client: Client, a: argparse.Namespace) -> int:
    info = to_dict(client.call("Info", pb.Empty(), pb.InfoResponse))
    if a.format == "json":
        out(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        out(f"{key.replace('_', ' ').capitalize()}: {value}")
    return 0
