"""kctl create [flags] IMAGE [COMMAND...]"""

from __future__ import annotations

import argparse
import sys

from kettle.api import kettle_pb as pb
from kettle.cli import runflags
from kettle.cli.common import out
from kettle.errors import NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "create a container"


def configure(p: argparse.ArgumentParser) -> None:
    from kettle.cli.commands.run import add_replicas

    runflags.add_flags(p)
    add_replicas(p)


def create(client: Client, req: pb.CreateContainerRequest) -> pb.Container:
    """Create, pulling the image first if kettled does not have it."""
    try:
        return client.call("CreateContainer", req, pb.Container)
    except NotFound as e:
        if not str(e).startswith("image "):
            raise
    print(f"Unable to find image '{req.image}' locally", file=sys.stderr)
    from kettle.cli.pulling import pull  # only now: the progress display costs start-up time

    pull(client, req.image)
    return client.call("CreateContainer", req, pb.Container)


def run(client: Client, a: argparse.Namespace) -> int:
    if a.replicas is not None:
        from kettle.cli.commands.run import run_group

        return run_group(client, a, start=False)
    out(create(client, runflags.request(a, auto_remove=a.rm)).id)
    return 0
