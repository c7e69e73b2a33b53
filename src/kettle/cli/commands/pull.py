"""kctl pull [-q] IMAGE"""

from __future__ import annotations

import argparse

from kettle.cli.common import out
from kettle.cli.pulling import pull

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "pull an image from a registry"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress; print the name only")
    p.add_argument("image", help="NAME[:TAG|@DIGEST]")


def run(client: Client, a: argparse.Namespace) -> int:
    image = pull(client, a.image, a.quiet)
    out(image.name)
    return 0
