"""kctl logs [-f] [-t] [-n N|all] [--since X] [--until X] CONTAINER"""

from __future__ import annotations

import argparse
import sys

from kettle.api import kettle_pb as pb
from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "show a container's output"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with its time")
    p.add_argument("-n", "--tail", default="all", help="lines from the end (a number or all)")
    p.add_argument(
        "--since", help="output since: RFC3339 time, unix seconds or a duration ago (10m)"
    )
    p.add_argument(
        "--until", help="output before: RFC3339 time, unix seconds or a duration ago (10m)"
    )
    p.add_argument("container")


def copy_logs(
    client: Client,
    cid: str,
    follow: bool,
    tail: int,
    stamps: bool = False,
    since_ns: int = 0,
    until_ns: int = 0,
) -> None:
    req = pb.LogsRequest(id=cid, follow=follow, tail=tail, since_ns=since_ns, until_ns=until_ns)
    # A line longer than the log's piece size comes as several entries: one stamp per line.
    at_line_start: dict[tuple[str, str], bool] = {}
    for entry in client.stream("Logs", req, pb.LogEntry):
        stream = sys.stderr.buffer if entry.stream == "stderr" else sys.stdout.buffer
        key = (entry.container, entry.stream)
        if at_line_start.get(key, True):
            # A group's logs: each line says which member wrote it, as compose does.
            if entry.container:
                stream.write(entry.container.encode() + b" | ")
            if stamps:
                from kettle.cli.timefmt import format_ns

                stream.write(format_ns(entry.time_ns).encode() + b" ")
        at_line_start[key] = entry.line.endswith(b"\n")
        stream.write(entry.line)
        stream.flush()


def parse_tail(text: str) -> int:
    """-1 for all."""
    if text == "all":
        return -1
    if not text.lstrip("-").isdigit():
        raise InvalidArgument(f"--tail {text!r}: a number of lines or all")
    return max(int(text), -1)


def run(client: Client, a: argparse.Namespace) -> int:
    tail = parse_tail(a.tail)
    since_ns = until_ns = 0
    if a.since or a.until:
        from kettle.cli.timefmt import time_range

        since_ns, until_ns = time_range(a.since, a.until)
    copy_logs(client, a.container, a.follow, tail, a.timestamps, since_ns, until_ns)
    return 0
