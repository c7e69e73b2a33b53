"""``exec``: a new process in a running container's namespaces and cgroup.

The runtime (P) forks an intermediate that joins every namespace of the container's init
(the user namespace first), which forks the process itself so that it lands in the pid
namespace too.  P places it in the cgroup, then waits for EOF on the close-on-exec sync socket:
EOF means execve succeeded, a message means a step failed.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: its enums and selectors cost ~4 ms a start
import os

from kettle import syscalls as sc
from kettle.errors import FailedPrecondition, Internal
from kettle.runtime import init, namespaces, spec, sync
from kettle.runtime.context import Context
from kettle.runtime.create import error_from_child, write_pid_file
from kettle.runtime.lifecycle import manager_of, status_of
from kettle.runtime.state import ContainerState, Status, check_transition

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket as stdsocket
    from collections.abc import Mapping
    from typing import Any, NoReturn

    from kettle.runtime.seccomp import Compiled


class ExecOptions:
    def __init__(
        self,
        process: dict[str, Any],
        detach: bool = False,
        pid_file: str | None = None,
        console_socket: str | None = None,
        console_fd: socket.socket | None = None,
        preserve_fds: int = 0,
    ) -> None:
        self.process = process
        self.detach = detach
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.console_fd = console_fd
        self.preserve_fds = preserve_fds


def _container_namespaces(st: ContainerState) -> list[tuple[str, int, str]]:
    """Open the init's namespaces that differ from ours, in joining order."""
    opened: list[tuple[str, int, str]] = []
    try:
        for kind in namespaces.JOIN_ORDER:
            name = namespaces.KINDS[kind][1]
            theirs = f"/proc/{st.pid}/ns/{name}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
            except FileNotFoundError:
                continue  # the kernel lacks this namespace type
            opened.append((kind, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), theirs))
    except BaseException:
        for _, fd, _ in opened:
            os.close(fd)
        raise
    return opened


def execute(ctx: Context, container_id: str, opts: ExecOptions) -> int:
    """Start the process; returns its host pid (the caller waits when not detached)."""
    st = ctx.store.load(container_id)
    status = status_of(st)
    if status is Status.STOPPED:
        raise FailedPrecondition(f"cannot exec in a stopped container: {container_id}")
    check_transition(container_id, "exec", status)
    process = opts.process
    spec.validate_process(process, "process")
    if process.get("terminal") and not (opts.console_socket or opts.console_fd):
        raise FailedPrecondition(
            "cannot allocate tty if runc will detach without setting console socket"
        )
    mgr = manager_of(st)
    seccomp = (st.config.get("linux") or {}).get("seccomp")
    compiled = init.preload(process, seccomp, ctx.seccomp_programs)
    parent, child = sync.pair()
    console = opts.console_fd
    listener = None
    opened: list[tuple[str, int, str]] = []
    try:
        opened = _container_namespaces(st)
        if console is None and opts.console_socket:
            console = init.connect_console(opts.console_socket)
        listener = init.connect_seccomp_listener(seccomp)
        pid = os.fork()
    except BaseException:
        init.close_quietly([parent, child, console, listener], [fd for _, fd, _ in opened])
        raise
    userns = any(k == "user" for k, _, _ in opened)
    if pid == 0:
        parent.close()
        _intermediate(
            child,
            opened,
            process,
            seccomp,
            console,
            opts.preserve_fds,
            userns,
            listener,
            st,
            compiled,
        )
    init.close_quietly([child, listener, console], [fd for _, fd, _ in opened])
    try:
        msg = sync.recv(parent)
        if msg is None:
            raise Internal("exec process exited before it started")
        if msg.get("type") == "error":
            raise error_from_child(msg)
        exec_pid = int(msg["pid"])
        if mgr is not None and mgr.exists():
            mgr.apply(exec_pid)
        sync.send(parent, "go", pid=exec_pid)
        msg = sync.recv(parent)
        if msg is not None:
            raise error_from_child(msg)
    finally:
        parent.close()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # reaped by the caller's loop already
    if opts.pid_file:
        write_pid_file(opts.pid_file, exec_pid)
    return exec_pid


def _intermediate(
    chan: socket.socket,
    opened: list[tuple[str, int, str]],
    process: Mapping[str, Any],
    seccomp: Mapping[str, Any] | None,
    console: socket.socket | None,
    preserve_fds: int,
    userns: bool,
    listener: stdsocket.socket | None,
    st: ContainerState,
    compiled: Compiled | None,
) -> NoReturn:
    try:
        init.write_oom_score_adj(process)
        # Not dumpable until execve, before entering the container (see init.intermediate).
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        namespaces.join_all(opened)
        pid = os.fork()
        if pid == 0:
            _exec_main(
                chan, process, seccomp, console, preserve_fds, userns, listener, st, compiled
            )
        sync.send(chan, "pid", pid=pid)
        os._exit(0)
    except BaseException as e:
        init.child_fail(chan, e)


def _exec_main(
    chan: socket.socket,
    process: Mapping[str, Any],
    seccomp: Mapping[str, Any] | None,
    console: socket.socket | None,
    preserve_fds: int,
    userns: bool,
    listener: stdsocket.socket | None,
    st: ContainerState,
    compiled: Compiled | None,
) -> NoReturn:
    try:
        host_pid = int(sync.expect(chan, "go")["pid"])
        if process.get("terminal"):
            assert console is not None
            _exec_console(console, process)
        else:
            os.setsid()
        setgroups = True
        if userns:
            with open("/proc/self/setgroups") as f:
                setgroups = f.read().strip() != "deny"
        path, args, env = init.finish_process(
            process,
            seccomp,
            preserve_fds=preserve_fds,
            setgroups_allowed=setgroups,
            state_json=init.seccomp_state(seccomp, host_pid, st.oci_state(Status.RUNNING)),
            listener=listener,
            compiled=compiled,
        )
    except BaseException as e:
        init.child_fail(chan, e)
    init.exec_or_fail(chan, path, args, env)


def _exec_console(console: socket.socket, process: Mapping[str, Any]) -> None:
    # The container's devpts: setns into its mount namespace made /dev/ptmx the container's.
    master, slave = os.openpty()
    os.setsid()
    init.hand_over_pty(console, master, slave, process)
