"""kctl load [-i FILE]: images from a `docker save` or OCI layout tar (gzip too)."""

from __future__ import annotations

import argparse
import sys
from typing import IO, TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.cli.upload import chunks, stream_unary
from kettle.errors import InvalidArgument, NotFound, oserror_text

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "load images from a tar archive (docker save or OCI layout)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", metavar="FILE", help="read from FILE instead of stdin")


def familiar(name: str) -> str:
    from kettle.cli.commands.images import split_name

    repo, tag, digest = split_name(name)
    return f"{repo}@{digest}" if digest else f"{repo}:{tag}"


def run(client: Client, a: argparse.Namespace) -> int:
    f: IO[bytes]
    if a.input:
        try:
            f = open(a.input, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise NotFound(f"load: {a.input}: no such file") from None
        except OSError as e:
            raise InvalidArgument(f"load: {a.input}: {oserror_text(e)}") from None
    else:
        if sys.stdin.isatty():
            raise InvalidArgument("load: no archive: give -i FILE or pipe one to stdin")
        f = sys.stdin.buffer
    try:
        resp = stream_unary(client, "LoadImages", chunks(f), pb.LoadImagesResponse)
    finally:
        if a.input:
            f.close()
    for image in resp.images:
        out(f"Loaded image: {familiar(image.name)}")
    return 0
