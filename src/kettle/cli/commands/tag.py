"""kctl tag SOURCE TARGET"""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "give an image another name (SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG])"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="image name or id")
    p.add_argument("target", help="the new NAME[:TAG]")


def run(client: Client, a: argparse.Namespace) -> int:
    client.call("TagImage", pb.TagImageRequest(source=a.source, target=a.target), pb.Image)
    return 0
