"""kctl images"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.cli.common import image_json, out

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "list images"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("-q", "--quiet", action="store_true")


def run(client: Client, a: argparse.Namespace) -> int:
    images = client.call("ListImages", pb.ListImagesRequest(), pb.ListImagesResponse).images
    if a.format == "json":
        out(json.dumps([image_json(i) for i in images], indent=2))
    elif a.quiet:
        for i in images:
            out(i.digest)
    else:
        from kettle.cli.format import ago, size, table

        rows = [[i.name, i.digest[7:19], ago(i.created_ns), size(i.size)] for i in images]
        out(table(["IMAGE", "DIGEST", "PULLED", "SIZE"], rows))
    return 0
