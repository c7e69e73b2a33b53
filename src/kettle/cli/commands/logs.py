"""kctl logs [-f] [-t] [-n N] CONTAINER"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.errors import InvalidArgument

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "show a container's output"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("container")


def copy_logs(client: Client, cid: str, follow: bool, tail: int, stamps: bool = False) -> None:
    req = pb.LogsRequest(id=cid, follow=follow, tail=tail)
    for entry in client.stream("Logs", req, pb.LogEntry):
        stream = sys.stderr.buffer if entry.stream == "stderr" else sys.stdout.buffer
        if stamps:
            from datetime import UTC, datetime

            when = datetime.fromtimestamp(entry.time_ns / 1e9, UTC).isoformat()
            stream.write(when.encode() + b" ")
        stream.write(entry.line)
        stream.flush()


def run(client: Client, a: argparse.Namespace) -> int:
    if a.tail != "all" and not a.tail.lstrip("-").isdigit():
        raise InvalidArgument(f"--tail {a.tail!r}: a number or all")
    tail = -1 if a.tail == "all" else int(a.tail)
    copy_logs(client, a.container, a.follow, tail, a.timestamps)
    return 0
