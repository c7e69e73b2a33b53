"""kctl stats [--no-stream] [--format table|json] [-a] [CONTAINER...]"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from kettle.api import kettle_pb as pb
from kettle.cli.common import out

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "a live view of containers' resource use"

HEADERS = [
    "CONTAINER ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
    "PIDS",
]
#: clear the screen and go home, as `docker stats` redraws its table.
_REDRAW = "\033[2J\033[H"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-stream", action="store_true", help="print one reading and exit")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("-a", "--all", action="store_true", help="stopped containers too")
    p.add_argument("containers", nargs="*")


def binary_size(n: int) -> str:
    """Docker's memory figures: 4 significant digits, binary units (1.523MiB)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.4g}{unit}"
        value /= 1024
    return f"{n}B"


def figures(cur: pb.ContainerStats, prev: pb.ContainerStats | None) -> dict[str, Any]:
    """One container's reading as JSON, with CPU % against the previous reading."""
    from kettle.daemon.stats import cpu_percent, memory_percent

    cpu = 0.0
    if prev is not None and prev.read_ns and cur.read_ns:
        cpu = cpu_percent(
            prev.cpu_usage_ns, prev.system_ns, cur.cpu_usage_ns, cur.system_ns, cur.online_cpus
        )
    return {
        "id": cur.id,
        "name": cur.name,
        "running": bool(cur.read_ns),
        "cpu_percent": round(cpu, 2),
        "memory_usage": cur.memory_usage,
        "memory_limit": cur.memory_limit,
        "memory_percent": round(memory_percent(cur.memory_usage, cur.memory_limit), 2),
        "pids": cur.pids,
        "net_rx": cur.net_rx,
        "net_tx": cur.net_tx,
        "block_read": cur.block_read,
        "block_write": cur.block_write,
        "cpu_usage_ns": cur.cpu_usage_ns,
        "system_ns": cur.system_ns,
        "online_cpus": cur.online_cpus,
        "read_ns": cur.read_ns,
    }


def row(f: dict[str, Any]) -> list[str]:
    from kettle.cli.format import size

    if not f["running"]:
        return [f["id"][:12], f["name"], "--", "-- / --", "--", "--", "--", "--"]
    return [
        f["id"][:12],
        f["name"],
        f"{f['cpu_percent']:.2f}%",
        f"{binary_size(f['memory_usage'])} / {binary_size(f['memory_limit'])}",
        f"{f['memory_percent']:.2f}%",
        f"{size(f['net_rx'])} / {size(f['net_tx'])}",
        f"{size(f['block_read'])} / {size(f['block_write'])}",
        str(f["pids"]),
    ]


def _show(items: list[dict[str, Any]], a: argparse.Namespace, redraw: bool) -> None:
    if a.format == "json":
        # One JSON array per reading, on one line each while streaming.
        out(json.dumps(items, indent=None if not a.no_stream else 2))
    else:
        from kettle.cli.format import table

        text = table(HEADERS, [row(f) for f in items])
        sys.stdout.write((_REDRAW if redraw else "") + text + "\n")
    sys.stdout.flush()


def run(client: Client, a: argparse.Namespace) -> int:
    ids = list(a.containers)
    if a.all and not ids:
        req = pb.ListContainersRequest(all=True)
        ids = [
            c.id for c in client.call("ListContainers", req, pb.ListContainersResponse).containers
        ]
        if not ids:
            _show([], a, False)
            return 0
    redraw = a.format == "table" and not a.no_stream and sys.stdout.isatty()
    prev: dict[str, pb.ContainerStats] | None = None
    # Always a stream: CPU % needs two readings, so even --no-stream waits for the second.
    readings = client.stream("Stats", pb.StatsRequest(ids=ids, stream=True), pb.StatsResponse)
    try:
        for resp in readings:
            if a.no_stream and prev is None:
                prev = {s.id: s for s in resp.stats}
                continue
            _show([figures(s, (prev or {}).get(s.id)) for s in resp.stats], a, redraw)
            prev = {s.id: s for s in resp.stats}
            if a.no_stream:
                return 0
    finally:
        readings.close()  # type: ignore[attr-defined]  # a generator
    if a.no_stream:
        # The stream ended before a second reading (its containers went away).
        _show([figures(s, None) for s in (prev or {}).values()], a, False)
    return 0
