"""kctl pull IMAGE"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kettle.cli.common import out
from kettle.cli.pulling import pull

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "pull an image"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("image")


def run(client: Client, a: argparse.Namespace) -> int:
    image = pull(client, a.image, a.quiet)
    out(f"{image.name} {image.digest}")
    return 0
