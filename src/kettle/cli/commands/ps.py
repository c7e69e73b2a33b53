"""kctl ps [-a] [-q] [-n N] [-l] [--no-trunc] [-f KEY=VALUE]... [--format table|json|TEMPLATE]"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from kettle.api import kettle_pb as pb
from kettle.cli.common import container_json, out

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "list containers"
FIELDS = [
    "ID",
    "Image",
    "Command",
    "CreatedAt",
    "RunningFor",
    "Status",
    "State",
    "Names",
    "Labels",
    "Group",
    "RestartCount",
    "Health",
]

DEFAULT_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="table", help="table, json or a {{.Field}} template")
    p.add_argument("-a", "--all", action="store_true", help="also stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="ids only")
    p.add_argument("-f", "--filter", action="append", default=[], help="key=value")
    p.add_argument("-n", "--last", type=int, default=-1, help="the n last created")
    p.add_argument("-l", "--latest", action="store_true", help="the last created")
    p.add_argument("--no-trunc", action="store_true")


def status_text(c: pb.Container) -> str:
    import time

    from kettle.daemon.policy import display_status

    return display_status(
        c.status,
        time.time_ns(),
        exit_code=c.exit_code,
        started_ns=c.started_ns,
        finished_ns=c.finished_ns,
        restart_count=c.restart_count,
        next_restart_ns=c.next_restart_ns,
        health=c.health.status if c.health is not None else "",
        last_exit_reason=c.last_exit_reason,
    )


def row(c: pb.Container, trunc: bool) -> dict[str, Any]:
    from kettle.cli.format import ago, stamp

    command = " ".join(c.command)
    return {
        "ID": c.id[:12] if trunc else c.id,
        "Image": c.image,
        "Command": json.dumps(
            command[:20] + "…" if trunc and len(command) > 20 else command, ensure_ascii=False
        ),
        "CreatedAt": stamp(c.created_ns),
        "RunningFor": ago(c.created_ns),
        "Status": status_text(c),
        "State": c.status,
        "Names": c.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(c.labels.items())),
        "Group": c.group,
        "RestartCount": c.restart_count,
        "Health": c.health.status if c.health is not None else "",
    }


def run(client: Client, a: argparse.Namespace) -> int:
    last = 1 if a.latest else a.last
    req = pb.ListContainersRequest(all=a.all or last > 0, filters=a.filter)
    found = client.call("ListContainers", req, pb.ListContainersResponse).containers
    if last > 0:
        found = found[:last]
    if a.quiet:
        for c in found:
            out(c.id if a.no_trunc else c.id[:12])
    elif a.format == "json":
        out(json.dumps([container_json(c) for c in found], indent=2))
    else:
        from kettle.cli.template import output

        rows = [row(c, not a.no_trunc) for c in found]
        fmt = a.format
        if fmt == "table":
            fmt = (
                "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}"
            )
        text = output(fmt, rows, FIELDS, {"ID": "CONTAINER ID", "RunningFor": "CREATED"})
        if text:
            out(text)
    return 0
