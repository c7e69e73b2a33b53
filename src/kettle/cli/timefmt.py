"""Times as kctl reads and prints them, in Docker's forms.

Read (--since/--until): an RFC3339 timestamp (2026-11-25T10:00:00Z, with or without a
fraction or an offset; without an offset, local time, as Docker), unix seconds (1700000000 or
1700000000.5), or a Go duration (10m, 1h30m, 45s) meaning that long before now.
Printed: RFC3339 with nine fraction digits in UTC (2026-11-25T10:00:00.123456789Z)."""

from __future__ import annotations

import re
import time

from kettle.errors import InvalidArgument

_UNIX = re.compile(r"^(\d+)(?:\.(\d{1,9}))?$")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)
_DURATION = re.compile(r"^[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def _fraction_ns(digits: str | None) -> int:
    return int((digits or "").ljust(9, "0"))


def _duration_ns(text: str) -> int:
    from decimal import Decimal

    total = sum(
        Decimal(num) * _UNIT_NS[unit] for num, unit in _DURATION_PART.findall(text.lstrip("+-"))
    )
    ns = int(total)
    return -ns if text.startswith("-") else ns


def _rfc3339_ns(m: re.Match[str]) -> int:
    from datetime import UTC, datetime, timedelta, timezone

    year, month, day, hour, minute, sec = (int(g or 0) for g in m.groups()[:6])
    zone = m.group(8)
    tz: timezone | None = None
    if zone in ("Z", "z"):
        tz = UTC
    elif zone:
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        tz = timezone(-offset if zone[0] == "-" else offset)
    dt = datetime(year, month, day, hour, minute, sec, tzinfo=tz)
    # Naive: the local time zone, as Docker reads a timestamp without one.
    seconds = int(dt.timestamp())
    return seconds * 1_000_000_000 + _fraction_ns(m.group(7))


def parse_time(text: str, flag: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch for a --since/--until value; `flag` names it in errors."""
    value = text.strip()
    try:
        m = _UNIX.match(value)
        if m:
            return int(m.group(1)) * 1_000_000_000 + _fraction_ns(m.group(2))
        m = _RFC3339.match(value)
        if m:
            return _rfc3339_ns(m)
        if _DURATION.match(value):
            now = time.time_ns() if now_ns is None else now_ns
            return now - _duration_ns(value)
    except (ValueError, OverflowError) as e:
        raise InvalidArgument(f"{flag} {text!r}: {e}") from None
    raise InvalidArgument(
        f"{flag} {text!r}: not a time: use an RFC3339 timestamp (2026-11-25T10:00:00Z), "
        "unix seconds (1700000000.5) or a duration before now (10m, 1h30m)"
    )


def time_range(since: str, until: str) -> tuple[int, int]:
    """--since and --until as nanoseconds (0: not given)."""
    return (
        parse_time(since, "--since") if since else 0,
        parse_time(until, "--until") if until else 0,
    )


def format_ns(ns: int) -> str:
    """RFC3339 in UTC with nine fraction digits, as Docker prints log and event times."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"
