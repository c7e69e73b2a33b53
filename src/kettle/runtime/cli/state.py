"""kettle-runtime state <id>"""

from __future__ import annotations

from kettle.runtime.cli import parse
from kettle.runtime.cli._common import need_id, print_json
from kettle.runtime.context import Context


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import state

    print_json(state(ctx, need_id(parse(argv, ()).args, "state")), indent=2)
    return 0
