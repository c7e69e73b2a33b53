"""kctl start CONTAINER..."""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli.common import out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "start containers"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("containers", nargs="+")


def run(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        client.call("StartContainer", pb.ContainerRequest(id=ref), pb.Container)
        out(ref)
    return 0
