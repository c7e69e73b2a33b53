"""kctl rm [-f] CONTAINER..."""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.errors import NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "remove containers (or replica groups, by name)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("containers", nargs="+")


def run(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        try:
            req = pb.RemoveContainerRequest(id=ref, force=a.force)
            client.call("RemoveContainer", req, pb.Empty)
        except NotFound:
            try:
                client.call("RemoveGroup", pb.GroupRequest(name=ref, force=a.force), pb.Empty)
            except NotFound:
                raise NotFound(f"no such container or group: {ref}") from None
        out(ref)
    return 0
