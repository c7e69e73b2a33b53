"""kctl scale NAME=N...  (a group made by `kctl run --replicas`)"""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "set the number of members of replica groups"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("groups", nargs="+", metavar="NAME=N")


def run(client: Client, a: argparse.Namespace) -> int:
    wanted = []
    for item in a.groups:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit():
            raise InvalidArgument(f"scale {item!r}: use NAME=N with N a number")
        wanted.append((name, int(count)))
    for name, count in wanted:
        req = pb.ScaleRequest(name=name, replicas=count, start=True)
        group = client.call("ScaleGroup", req, pb.Group)
        out(f"{group.name} scaled to {group.replicas}")
    return 0
