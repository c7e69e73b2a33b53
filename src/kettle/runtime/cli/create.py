"""kettle-runtime create <id>"""

from __future__ import annotations

from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import need_id
from kettle.runtime.context import Context

FLAGS = (
    Flag(("--bundle", "-b"), "bundle", default="."),
    Flag(("--console-socket",), "console_socket"),
    Flag(("--pid-file",), "pid_file"),
    Flag(("--no-pivot",), "no_pivot", "bool", False),
    Flag(("--no-new-keyring",), "no_new_keyring", "bool", False),
    Flag(("--preserve-fds",), "preserve_fds", "int", 0),
)


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.create import CreateOptions, create

    p = parse(argv, FLAGS)
    cid = need_id(p.args, "create")
    v = p.values
    create(
        ctx,
        cid,
        CreateOptions(
            bundle=v["bundle"],
            console_socket=v["console_socket"],
            pid_file=v["pid_file"],
            no_pivot=v["no_pivot"],
            no_new_keyring=v["no_new_keyring"],
            preserve_fds=v["preserve_fds"],
        ),
    )
    return 0
