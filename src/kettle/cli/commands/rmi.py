"""kctl rmi [-f] IMAGE..."""

from __future__ import annotations

import argparse
import sys

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.errors import KettleError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "remove images (a name of an image with several only loses that name)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove an image id with several names, and an image containers were made from",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="name or id")


def _names(client: Client) -> dict[str, list[str]]:
    """image id -> its names, as kettled lists them now."""
    images = client.call("ListImages", pb.ListImagesRequest(), pb.ListImagesResponse).images
    by_id: dict[str, list[str]] = {}
    for i in images:
        by_id.setdefault(i.config, []).append(i.name)
    return by_id


#: whether this kettle.v1 API has RemoveImageRequest.force (proposed; not there yet).
HAS_FORCE = "force" in pb.RemoveImageRequest.__slots__


def request(ref: str, force: bool) -> pb.RemoveImageRequest:
    req = pb.RemoveImageRequest(reference=ref)
    if force and HAS_FORCE:
        setattr(req, "force", True)  # noqa: B010 (a field newer kettle_pb modules have)
    return req


def targets(ref: str, force: bool, names: dict[str, list[str]]) -> list[str]:
    """What to ask kettled to remove for `ref`.  Without a force field, `-f ID` of an image
    with several names removes each name in turn, which is what forcing does."""
    if not force or HAS_FORCE:
        return [ref]
    hexid = ref.removeprefix("sha256:")
    if len(hexid) < 4 or any(c not in "0123456789abcdef" for c in hexid):
        return [ref]
    ids = [i for i in names if i.removeprefix("sha256:").startswith(hexid)]
    return list(names[ids[0]]) if len(ids) == 1 else [ref]


def run(client: Client, a: argparse.Namespace) -> int:
    before = _names(client)
    failed = False
    for ref in a.images:
        try:
            for target in targets(ref, a.force, before):
                client.call("RemoveImage", request(target, a.force), pb.Empty)
        except KettleError as e:
            # Docker goes on with the other images and fails at the end.
            print(f"kctl: {e}", file=sys.stderr)
            failed = True
    # What went, from kettled's own lists (an rmi of a name may untag or delete).
    after = _names(client)
    for image_id, names in before.items():
        left = after.get(image_id, [])
        for name in names:
            if name not in left:
                out(f"Untagged: {name}")
        if not left:
            out(f"Deleted: {image_id}")
    return 1 if failed else 0
