"""kettle-runtime list [--format table|json] [--quiet]"""

from __future__ import annotations

import sys

from kettle.errors import InvalidArgument
from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import print_json
from kettle.runtime.context import Context

FLAGS = (
    Flag(("--format", "-f"), "format", default="table"),
    Flag(("--quiet", "-q"), "quiet", "bool", False),
)


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import list_states

    v = parse(argv, FLAGS).values
    states = list_states(ctx)
    if v["quiet"]:
        for s in states:
            sys.stdout.write(s["id"] + "\n")
        return 0
    if v["format"] == "json":
        print_json(states)
        return 0
    if v["format"] != "table":
        raise InvalidArgument(f"invalid format option: {v['format']}")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for s in states:
        rows.append(
            (s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or "root")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write(
            "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        )
    return 0
