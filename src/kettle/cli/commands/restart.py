"""kctl restart [-t SECONDS] CONTAINER..."""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli.common import out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "restart containers (stop, then start)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=int, default=-1, help="seconds before SIGKILL")
    p.add_argument("containers", nargs="+")


def run(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        req = pb.StopContainerRequest(id=ref, timeout=a.time)
        client.call("RestartContainer", req, pb.Container)
        out(ref)
    return 0
