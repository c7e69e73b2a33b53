"""kettle-runtime delete [--force] <id>"""

from __future__ import annotations

from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import need_id
from kettle.runtime.context import Context

FLAGS = (Flag(("--force", "-f"), "force", "bool", False),)


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import delete

    p = parse(argv, FLAGS)
    delete(ctx, need_id(p.args, "delete"), p.values["force"])
    return 0
