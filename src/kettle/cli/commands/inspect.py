"""kctl inspect CONTAINER..."""

from __future__ import annotations

import argparse
import json

from kettle.api import kettle_pb as pb
from kettle.cli.common import container_json, out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "containers as JSON"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("containers", nargs="+")


def run(client: Client, a: argparse.Namespace) -> int:
    found = [
        container_json(client.call("InspectContainer", pb.ContainerRequest(id=r), pb.Container))
        for r in a.containers
    ]
    out(json.dumps(found, indent=2))
    return 0
