"""kctl save [-o FILE] IMAGE...: a tar archive `docker load`, `podman load` and kctl load read."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.errors import InvalidArgument, oserror_text

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "save images to a tar archive (stdout unless -o)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="name or id")


def _copy(client: Client, refs: list[str], dest: IO[bytes]) -> None:
    req = pb.SaveImagesRequest(references=refs)
    for chunk in client.stream("SaveImages", req, pb.DataChunk):
        dest.write(chunk.data)
    dest.flush()


def run(client: Client, a: argparse.Namespace) -> int:
    if not a.output:
        if sys.stdout.isatty():
            raise InvalidArgument(
                "save: refusing to write a tar archive to a terminal; use -o FILE or redirect"
            )
        _copy(client, a.images, sys.stdout.buffer)
        return 0
    # A temporary file beside FILE, renamed at the end: a failed save leaves no half archive.
    path = os.path.abspath(a.output)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "wb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise InvalidArgument(f"save: {a.output}: {oserror_text(e)}") from None
    try:
        with f:
            _copy(client, a.images, f)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return 0
