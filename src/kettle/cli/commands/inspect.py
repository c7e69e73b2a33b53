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
    p.add_argument(
        "-f",
        "--format",
        default="",
        help="a template per container, e.g. '{{.status}} {{.exit_code}}' ({{json .labels}})",
    )
    p.add_argument("containers", nargs="+")


def run(client: Client, a: argparse.Namespace) -> int:
    found = [
        container_json(client.call("InspectContainer", pb.ContainerRequest(id=r), pb.Container))
        for r in a.containers
    ]
    if a.format:
        from kettle.cli.template import render_object

        lines = [render_object(a.format, c) for c in found]  # all or, on a bad field, none
        out("\n".join(lines))
        return 0
    out(json.dumps(found, indent=2))
    return 0
