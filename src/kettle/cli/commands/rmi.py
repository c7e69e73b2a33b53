"""kctl rmi IMAGE..."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.cli.common import out

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "remove images"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+")


def run(client: Client, a: argparse.Namespace) -> int:
    for ref in a.images:
        client.call("RemoveImage", pb.RemoveImageRequest(reference=ref), pb.Empty)
        out(f"Untagged: {ref}")
    return 0
