"""kettle-runtime pause <id>"""

from __future__ import annotations

from kettle.runtime.cli import parse
from kettle.runtime.cli._common import need_id
from kettle.runtime.context import Context


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import pause

    pause(ctx, need_id(parse(argv, ()).args, "pause"))
    return 0
