"""kctl volume create|ls|inspect|rm"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.errors import InvalidArgument

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "manage volumes"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="volume_cmd", required=True, metavar="COMMAND")
    c = sub.add_parser("create", help="create a volume")
    c.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("name", nargs="?", help="default: a random name")
    ls = sub.add_parser("ls", aliases=["list"], help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true", help="names only")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    i = sub.add_parser("inspect", help="show volumes as JSON")
    i.add_argument("names", nargs="+")
    rm = sub.add_parser("rm", aliases=["remove"], help="remove volumes")
    rm.add_argument("-f", "--force", action="store_true", help="also when containers use it")
    rm.add_argument("names", nargs="+")


def volume_json(v: pb.Volume) -> dict[str, Any]:
    return {
        "name": v.name,
        "driver": "local",
        "mountpoint": v.mountpoint,
        "created_ns": v.created_ns,
        "labels": dict(v.labels),
        "used_by": list(v.used_by),
    }


def _labels(items: list[str]) -> dict[str, str]:
    out_: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"--label {item}: use key=value")
        out_[key] = value
    return out_


def run(client: Client, a: argparse.Namespace) -> int:
    cmd = a.volume_cmd
    if cmd == "create":
        import secrets

        name = a.name or secrets.token_hex(32)
        req = pb.VolumeRequest(name=name, labels=_labels(a.label))
        out(client.call("CreateVolume", req, pb.Volume).name)
        return 0
    if cmd in ("ls", "list"):
        vols = client.call("ListVolumes", pb.Empty(), pb.ListVolumesResponse).volumes
        if a.format == "json":
            out(json.dumps([volume_json(v) for v in vols], indent=2))
        elif a.quiet:
            for v in vols:
                out(v.name)
        else:
            from kettle.cli.format import table

            rows = [["local", v.name, str(len(v.used_by))] for v in vols]
            out(table(["DRIVER", "VOLUME NAME", "CONTAINERS"], rows))
        return 0
    if cmd == "inspect":
        found = [
            volume_json(client.call("InspectVolume", pb.VolumeRequest(name=n), pb.Volume))
            for n in a.names
        ]
        out(json.dumps(found, indent=2))
        return 0
    for name in a.names:  # rm
        client.call("RemoveVolume", pb.VolumeRequest(name=name, force=a.force), pb.Empty)
        out(name)
    return 0
