"""kettle-runtime kill [--all] <id> [signal]"""

from __future__ import annotations

from kettle.errors import InvalidArgument
from kettle.runtime.cli import Flag, parse
from kettle.runtime.context import Context

FLAGS = (Flag(("--all", "-a"), "all", "bool", False),)


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import kill, parse_signal

    p = parse(argv, FLAGS)
    if not p.args or len(p.args) > 2:
        raise InvalidArgument('"kill" requires a container id and an optional signal')
    sig = parse_signal(p.args[1]) if len(p.args) == 2 else 15
    kill(ctx, p.args[0], sig, p.values["all"])
    return 0
