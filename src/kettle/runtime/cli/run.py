"""kettle-runtime run <id>: create, start, and (unless --detach) wait and delete."""

from __future__ import annotations

from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import need_id
from kettle.runtime.cli.create import FLAGS as CREATE_FLAGS
from kettle.runtime.context import Context

FLAGS = (
    *CREATE_FLAGS,
    Flag(("--detach", "-d"), "detach", "bool", False),
    Flag(("--keep",), "keep", "bool", False),
    Flag(("--no-subreaper",), "no_subreaper", "bool", False),
)


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime import foreground, spec
    from kettle.runtime.create import CreateOptions, create
    from kettle.runtime.lifecycle import delete, start

    p = parse(argv, FLAGS)
    cid = need_id(p.args, "run")
    v = p.values
    opts = CreateOptions(
        bundle=v["bundle"],
        console_socket=v["console_socket"],
        pid_file=v["pid_file"],
        no_pivot=v["no_pivot"],
        no_new_keyring=v["no_new_keyring"],
        preserve_fds=v["preserve_fds"],
    )
    relay = None
    forwarder = foreground.Forwarder()
    if not v["detach"]:
        forwarder.install()
        if not v["no_subreaper"]:
            foreground.become_subreaper()
        config, _ = spec.load(opts.bundle)
        if (config.get("process") or {}).get("terminal") and not opts.console_socket:
            relay = foreground.ConsoleRelay()
            opts.console_fd = relay.theirs
    st = create(ctx, cid, opts)
    try:
        if relay is not None:
            relay.receive_master()
        start(ctx, cid)
    except BaseException:
        delete(ctx, cid, force=True)
        raise
    if v["detach"]:
        return 0
    forwarder.set_target(st.pid)
    if relay is not None:
        relay.pump(lambda: True)
    code = foreground.wait_for(st.pid)
    if not v["keep"]:
        delete(ctx, cid, force=True)
    return code
