"""kctl logout [SERVER]"""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.errors import NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "forget kettled's credentials for a registry"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("server", nargs="?", default="docker.io", help="registry host[:port]")


def run(client: Client, a: argparse.Namespace) -> int:
    try:
        client.call("Logout", pb.LogoutRequest(server=a.server), pb.Empty)
    except NotFound:
        out(f"Not logged in to {a.server}")
        return 0
    out(f"Removing login credentials for {a.server}")
    return 0
