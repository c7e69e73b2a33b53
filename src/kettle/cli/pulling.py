"""Pulling through kettled, with progress on stderr."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.errors import KettleError

if TYPE_CHECKING:
    from kettle.cli.client import Client


def pull(client: Client, ref: str, quiet: bool = False) -> pb.Image:
    """Pull through kettled, showing progress on stderr."""
    image: pb.Image | None = None
    for ev in client.stream("PullImage", pb.PullImageRequest(reference=ref), pb.PullProgress):
        if ev.image is not None:
            image = ev.image
        elif not quiet and ev.kind in ("exists", "unpacked", "resolved"):
            print(f"{ev.digest[:19]}: {ev.kind}", file=sys.stderr)
    if image is None:
        raise KettleError(f"pull {ref}: kettled ended the pull without an image")
    return image
