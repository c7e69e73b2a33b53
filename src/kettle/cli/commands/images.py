"""kctl images [-a] [-q] [--digests] [--no-trunc] [--format table|json] [REPOSITORY[:TAG]]"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from kettle.api import kettle_pb as pb
from kettle.cli.common import image_json, out

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "list images"
NONE = "<none>"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="every name, also an image's name@digest rows that its tags already show",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="image ids only")
    p.add_argument("--digests", action="store_true", help="show the registry digests")
    p.add_argument("--no-trunc", action="store_true", help="full image ids")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("repository", nargs="?", help="only REPOSITORY[:TAG]")


def split_name(name: str) -> tuple[str, str, str]:
    """(repository as Docker shows it, tag or <none>, digest or "") of a stored image name
    (``registry/path:tag`` or ``registry/path@sha256:...``).  kettle.image.reference would
    cost kctl ~90 ms of imports for this."""
    rest, _, digest = name.partition("@")
    tag = NONE
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
    if rest.startswith("docker.io/"):
        rest = rest[len("docker.io/") :]
        if rest.startswith("library/") and rest.count("/") == 1:
            rest = rest[len("library/") :]
    return rest, tag, digest


def image_id(i: pb.Image, full: bool = False) -> str:
    return i.config if full else i.config.removeprefix("sha256:")[:12]


def _matches(want: str, repo: str, tag: str) -> bool:
    w_repo, w_tag, _ = split_name(want)
    if w_repo != repo:
        return False
    # A filter without a tag matches every tag (Docker's `images busybox`).
    return ":" not in want.rpartition("/")[2] or w_tag == tag


def rows(images: list[pb.Image], all_: bool) -> list[tuple[pb.Image, str, str, str]]:
    """(image, repository, tag, digest) per row shown, newest first."""
    split = [(i, *split_name(i.name)) for i in images]
    tagged = {(i.config, repo) for i, repo, tag, _ in split if tag != NONE}
    shown = [r for r in split if all_ or r[2] != NONE or (r[0].config, r[1]) not in tagged]
    shown.sort(key=lambda r: (-r[0].created_ns, r[1], r[2]))
    return shown


def to_json(i: pb.Image, repo: str, tag: str) -> dict[str, Any]:
    return {**image_json(i), "repository": repo, "tag": tag, "id": i.config}


def run(client: Client, a: argparse.Namespace) -> int:
    images = client.call("ListImages", pb.ListImagesRequest(), pb.ListImagesResponse).images
    shown = rows(list(images), a.all)
    if a.repository:
        shown = [r for r in shown if _matches(a.repository, r[1], r[2])]
    if a.format == "json":
        out(json.dumps([to_json(i, repo, tag) for i, repo, tag, _ in shown], indent=2))
        return 0
    if a.quiet:
        for iid in dict.fromkeys(image_id(i, a.no_trunc) for i, *_ in shown):
            out(iid)
        return 0
    from kettle.cli.format import ago, size, table

    headers = [
        "REPOSITORY",
        "TAG",
        *(["DIGEST"] if a.digests else []),
        "IMAGE ID",
        "CREATED",
        "SIZE",
    ]
    lines = []
    for i, repo, tag, digest in shown:
        lines.append([
            repo,
            tag,
            *([digest or i.digest or NONE] if a.digests else []),
            image_id(i, a.no_trunc),
            ago(i.created_ns),
            size(i.size),
        ])  # fmt: skip
    out(table(headers, lines))
    return 0
