"""Tables and human-readable sizes and times for kctl's output."""

from __future__ import annotations

import time


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"


def ago(ns: int, now_ns: int | None = None) -> str:
    if not ns:
        return ""
    secs = ((now_ns if now_ns is not None else time.time_ns()) - ns) // 1_000_000_000
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= length:
            count = secs // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    if secs >= 1:
        return f"{secs} second{'s' if secs > 1 else ''} ago"
    return "less than a second ago"


def stamp(ns: int) -> str:
    """Local time like Docker's CreatedAt: 2026-11-25 10:00:00 +0000 UTC."""
    if not ns:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(ns / 1e9))


def status(state: str, exit_code: int, started_ns: int, finished_ns: int) -> str:
    if state == "running":
        return "Up " + ago(started_ns).removesuffix(" ago")
    if state == "exited":
        return f"Exited ({exit_code}) {ago(finished_ns)}"
    return state.capitalize()
