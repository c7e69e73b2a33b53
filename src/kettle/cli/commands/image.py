"""kctl image ls|inspect|rm|prune|tag|load|save|pull: Docker's image management verbs."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.errors import KettleError

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "manage images"

#: verb -> the kctl command module that serves it (Docker's aliases included).
ALIASES = {
    "ls": "images",
    "list": "images",
    "rm": "rmi",
    "remove": "rmi",
    "tag": "tag",
    "load": "load",
    "save": "save",
    "pull": "pull",
}


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="image_cmd", required=True, metavar="COMMAND")
    for verb, name in ALIASES.items():
        mod = importlib.import_module(f"kettle.cli.commands.{name}")
        sp = sub.add_parser(verb, help=mod.HELP, description=mod.HELP)
        mod.configure(sp)
        sp.set_defaults(image_fn=mod.run)
    sp = sub.add_parser("inspect", help="image details as JSON")
    sp.add_argument("images", nargs="+", metavar="IMAGE", help="name or id")
    sp.set_defaults(image_fn=inspect)
    sp = sub.add_parser("prune", help="remove untagged images no container uses")
    sp.add_argument("-a", "--all", action="store_true", help="every image no container uses")
    sp.add_argument("-f", "--force", action="store_true", help="do not ask")
    sp.set_defaults(image_fn=prune)


def run(client: Client, a: argparse.Namespace) -> int:
    fn: Callable[[Client, argparse.Namespace], int] = a.image_fn
    return fn(client, a)


def _repo(name: str) -> str:
    """registry/path of a stored name, without tag or digest."""
    rest = name.partition("@")[0]
    colon = rest.rfind(":")
    return rest[:colon] if colon > rest.rfind("/") else rest


def inspect_json(d: pb.ImageDetail) -> dict[str, Any]:
    """Docker's shape of `image inspect`, plus the manifest."""
    cfg = json.loads(d.config_json)
    i = d.image
    assert i is not None
    tags = [n for n in d.tags if "@" not in n]
    digests = dict.fromkeys(n if "@" in n else f"{_repo(n)}@{i.digest}" for n in d.tags)
    doc: dict[str, Any] = {
        "Id": i.config,
        "RepoTags": tags,
        "RepoDigests": list(digests),
        "Created": cfg.get("created", ""),
        "Author": cfg.get("author", ""),
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
    }
    if cfg.get("variant"):
        doc["Variant"] = cfg["variant"]
    doc.update(
        {
            "Size": i.size,
            "Config": cfg.get("config") or {},
            "RootFS": cfg.get("rootfs") or {},
            "History": cfg.get("history") or [],
            "Manifest": json.loads(d.manifest_json),
        }
    )
    return doc


def inspect(client: Client, a: argparse.Namespace) -> int:
    found, failed = [], False
    for ref in a.images:
        try:
            detail = client.call("InspectImage", pb.ImageRequest(reference=ref), pb.ImageDetail)
        except KettleError as e:
            print(f"kctl: {e}", file=sys.stderr)
            failed = True
            continue
        found.append(inspect_json(detail))
    out(json.dumps(found, indent=2))
    return 1 if failed else 0


def prune(client: Client, a: argparse.Namespace) -> int:
    if not a.force:
        what = "all images without a container" if a.all else "all untagged images"
        sys.stderr.write(f"This removes {what}. Continue? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    from kettle.cli.format import size

    resp = client.call("PruneImages", pb.PruneImagesRequest(all=a.all), pb.PruneImagesResponse)
    if resp.deleted:
        out("Deleted Images:")
        for item in resp.deleted:
            # kettled lists the names it forgot, then the ids of the images it deleted.
            out(f"deleted: {item}" if item.startswith("sha256:") else f"untagged: {item}")
        out("")
    out(f"Total reclaimed space: {size(resp.reclaimed)}")
    return 0
