"""kettle-runtime ps [--format table|json] <id> [ps options]"""

from __future__ import annotations

import subprocess
import sys

from kettle.errors import InvalidArgument
from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import print_json
from kettle.runtime.context import Context

FLAGS = (Flag(("--format", "-f"), "format", default="table"),)


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import pids

    p = parse(argv, FLAGS, stop_after=1)
    if not p.args:
        raise InvalidArgument('"ps" requires a container id')
    found = pids(ctx, p.args[0])
    if p.values["format"] == "json":
        print_json(found)
        return 0
    if p.values["format"] != "table":
        raise InvalidArgument(f"invalid format option: {p.values['format']}")
    ps_args = p.args[1:] or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise InvalidArgument(f"ps {' '.join(ps_args)}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0]
    cols = header.split()
    if "PID" not in cols:
        raise InvalidArgument("ps output has no PID column")
    idx = cols.index("PID")
    wanted = set(found)
    sys.stdout.write(header + "\n")
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > idx and fields[idx].isdigit() and int(fields[idx]) in wanted:
            sys.stdout.write(line + "\n")
    return 0
