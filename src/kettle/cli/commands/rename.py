"""kctl rename CONTAINER NEW_NAME"""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "rename a container"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("container")
    p.add_argument("name")


def run(client: Client, a: argparse.Namespace) -> int:
    req = pb.RenameContainerRequest(id=a.container, name=a.name)
    client.call("RenameContainer", req, pb.Container)
    return 0
