"""kettle-runtime events [--stats] [--interval 5s] <id>"""

from __future__ import annotations

import time

from kettle.errors import InvalidArgument
from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import need_id, print_json
from kettle.runtime.context import Context

FLAGS = (
    Flag(("--stats",), "stats", "bool", False),
    Flag(("--interval",), "interval", default="5s"),
)


def parse_duration(text: str) -> float:
    """Go durations as runc takes them: 5s, 500ms, 1m, 1m30s."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, num, i = 0.0, "", 0
    if text.replace(".", "", 1).isdigit():
        return float(text)
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = next(
            (u for u in ("ns", "us", "µs", "ms", "s", "m", "h") if text.startswith(u, i)), None
        )
        if unit is None or not num:
            raise InvalidArgument(f"--interval: invalid duration {text!r}")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num:
        raise InvalidArgument(f"--interval: missing unit in {text!r}")
    if total <= 0:
        raise InvalidArgument(f"--interval: duration must be greater than 0: {text!r}")
    return total


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import oom_count, stats, status_of
    from kettle.runtime.state import Status

    p = parse(argv, FLAGS)
    cid = need_id(p.args, "events")
    if p.values["stats"]:
        print_json({"type": "stats", "id": cid, "data": stats(ctx, cid)})
        return 0
    interval = parse_duration(p.values["interval"])
    ooms = oom_count(ctx, cid)
    while True:
        st = ctx.store.load(cid)
        if status_of(st) is Status.STOPPED:
            return 0
        now = oom_count(ctx, cid)
        if now > ooms:
            print_json({"type": "oom", "id": cid})
            ooms = now
        print_json({"type": "stats", "id": cid, "data": stats(ctx, cid)})
        time.sleep(interval)
