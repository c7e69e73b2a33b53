"""kctl ps [-a] [-q] [--format table|json]"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.cli.common import container_json, out

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "list containers"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")


def run(client: Client, a: argparse.Namespace) -> int:
    req = pb.ListContainersRequest(all=a.all)
    found = client.call("ListContainers", req, pb.ListContainersResponse).containers
    if a.format == "json":
        out(json.dumps([container_json(c) for c in found], indent=2))
    elif a.quiet:
        for c in found:
            out(c.id[:12])
    else:
        from kettle.cli.format import ago, status, table

        rows = [
            [
                c.id[:12],
                c.image,
                json.dumps(" ".join(c.command)[:30]),
                ago(c.created_ns),
                status(c.status, c.exit_code, c.started_ns, c.finished_ns),
                c.name,
            ]
            for c in found
        ]
        out(table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"], rows))
    return 0
