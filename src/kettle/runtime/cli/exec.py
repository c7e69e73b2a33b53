"""kettle-runtime exec <id> <command> [args...] | exec --process FILE <id>"""

from __future__ import annotations

import copy

from kettle.errors import InvalidArgument
from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import read_json_source
from kettle.runtime.context import Context

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FLAGS = (
    Flag(("--process", "-p"), "process"),
    Flag(("--detach", "-d"), "detach", "bool", False),
    Flag(("--pid-file",), "pid_file"),
    Flag(("--tty", "-t"), "tty", "bool", False),
    Flag(("--console-socket",), "console_socket"),
    Flag(("--env", "-e"), "env", "list"),
    Flag(("--cwd",), "cwd"),
    Flag(("--user", "-u"), "user"),
    Flag(("--additional-gids", "-g"), "gids", "list"),
    Flag(("--cap", "-c"), "caps", "list"),
    Flag(("--no-new-privs",), "nnp", "bool", False),
    Flag(("--apparmor",), "apparmor"),
    Flag(("--process-label",), "label"),
    Flag(("--preserve-fds",), "preserve_fds", "int", 0),
    Flag(("--cgroup",), "cgroup", "list"),
    Flag(("--ignore-paused",), "ignore_paused", "bool", False),
)


def build_process(base: dict[str, Any], v: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """runc's rules: --process replaces everything; else the container's process, overridden."""
    if v["process"]:
        proc = read_json_source(v["process"], "--process")
        if not isinstance(proc, dict):
            raise InvalidArgument("--process: must hold a json object")
    else:
        if not args:
            raise InvalidArgument("exec: arguments must be passed")
        proc = copy.deepcopy(base)
        proc["args"] = args
        proc.pop("terminal", None)
        proc.pop("consoleSize", None)
    if v["tty"]:
        proc["terminal"] = True
    env = list(proc.get("env") or [])
    env.extend(v["env"])
    proc["env"] = env
    if v["cwd"]:
        proc["cwd"] = v["cwd"]
    if v["user"]:
        uid, _, gid = v["user"].partition(":")
        try:
            user = dict(proc.get("user") or {})
            user["uid"] = int(uid)
            user["gid"] = int(gid) if gid else 0
        except ValueError:
            raise InvalidArgument(f"--user: expected uid[:gid], got {v['user']!r}") from None
        proc["user"] = user
    if v["gids"]:
        proc.setdefault("user", {})["additionalGids"] = [int(g) for g in v["gids"]]
    if v["caps"]:
        caps = dict(proc.get("capabilities") or {})
        for key in ("bounding", "effective", "permitted", "ambient"):
            current = list(caps.get(key) or [])
            current.extend(c for c in v["caps"] if c not in current)
            caps[key] = current
        proc["capabilities"] = caps
    if v["nnp"]:
        proc["noNewPrivileges"] = True
    if v["apparmor"]:
        proc["apparmorProfile"] = v["apparmor"]
    if v["label"]:
        proc["selinuxLabel"] = v["label"]
    proc.setdefault("cwd", "/")
    out: dict[str, Any] = proc
    return out


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime import foreground
    from kettle.runtime.execute import ExecOptions, execute

    p = parse(argv, FLAGS, stop_after=1)
    if not p.args:
        raise InvalidArgument('"exec" requires a container id')
    cid, args = p.args[0], p.args[1:]
    v = p.values
    if v["cgroup"]:
        raise InvalidArgument("--cgroup: sub-cgroup selection is not supported")
    st = ctx.store.load(cid)
    process = build_process(st.config.get("process") or {}, v, args)
    opts = ExecOptions(
        process=process,
        detach=v["detach"],
        pid_file=v["pid_file"],
        console_socket=v["console_socket"],
        preserve_fds=v["preserve_fds"],
    )
    relay = None
    forwarder = foreground.Forwarder()
    if not v["detach"]:
        forwarder.install()
        foreground.become_subreaper()
        if process.get("terminal") and not opts.console_socket:
            relay = foreground.ConsoleRelay()
            opts.console_fd = relay.theirs
    pid = execute(ctx, cid, opts)
    if v["detach"]:
        return 0
    forwarder.set_target(pid)
    if relay is not None:
        relay.receive_master()
        relay.pump(lambda: True)
    return foreground.wait_for(pid)
