"""kctl events [--since X] [--until X] [-f|--filter KEY=VALUE]... [--format text|json]"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from kettle.api import kettle_pb as pb

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "stream kettled's events (container create, start, die, destroy, image pull...)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since", help="replay kept events since: RFC3339 time, unix seconds or a duration ago"
    )
    p.add_argument(
        "--until", help="stop at: RFC3339 time, unix seconds or a duration ago (may be ahead)"
    )
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="type=, event=, container=, image=, label=KEY[=VALUE] (repeatable)",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")


def text_line(ev: pb.Event) -> str:
    """Docker's line: `TIME TYPE ACTION ID (key=value, ...)`."""
    from kettle.cli.timefmt import format_ns

    line = f"{format_ns(ev.time_ns)} {ev.type} {ev.action} {ev.id}"
    if ev.attributes:
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(ev.attributes.items()))
        line += f" ({attrs})"
    return line


def event_json(ev: pb.Event) -> dict[str, Any]:
    from kettle.cli.timefmt import format_ns

    return {
        "time": format_ns(ev.time_ns),
        "time_ns": ev.time_ns,
        "type": ev.type,
        "action": ev.action,
        "id": ev.id,
        "attributes": dict(ev.attributes),
    }


def run(client: Client, a: argparse.Namespace) -> int:
    since_ns = until_ns = 0
    if a.since or a.until:
        from kettle.cli.timefmt import time_range

        since_ns, until_ns = time_range(a.since, a.until)
    req = pb.EventsRequest(since_ns=since_ns, until_ns=until_ns, filters=list(a.filter))
    if a.format == "json":
        import json

        def show(ev: pb.Event) -> str:
            return json.dumps(event_json(ev), sort_keys=True)
    else:
        show = text_line
    for ev in client.stream("Events", req, pb.Event):
        sys.stdout.write(show(ev) + "\n")
        sys.stdout.flush()
    return 0
