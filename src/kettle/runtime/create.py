"""``create``: from a bundle to an init process blocked before exec (see init.py for the model)."""

from __future__ import annotations

import _socket as socket  # not socket.py: its enums and selectors cost ~4 ms a start
import os
import time

from kettle import errors
from kettle import syscalls as sc
from kettle.errors import FailedPrecondition, Internal, InvalidArgument, KettleError, oserror_text
from kettle.runtime import hooks, init, namespaces, spec, sync
from kettle.runtime.context import Context, now_rfc3339
from kettle.runtime.state import ContainerState, Status, exec_sock_path, proc_start_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, NoReturn

    from kettle.runtime.seccomp import Compiled

if TYPE_CHECKING:
    import signal
else:
    # The C module: signal.py wraps it in enums, which cost ~4 ms on every runtime start.
    import _signal as signal


class CreateOptions:
    def __init__(
        self,
        bundle: str,
        console_socket: str | None = None,
        pid_file: str | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        preserve_fds: int = 0,
        console_fd: socket.socket | None = None,
    ) -> None:
        self.bundle = bundle
        self.console_socket = console_socket
        self.pid_file = pid_file
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        #: an already connected console socket (``run`` with a terminal relays the pty itself)
        self.console_fd = console_fd


def error_from_child(msg: Mapping[str, Any]) -> KettleError:
    """The error a forked child reported with init.child_fail, as the same class."""
    return errors.from_code_name(
        str(msg.get("code", "INTERNAL")), str(msg.get("msg", "container init failed"))
    )


def write_pid_file(path: str, pid: int) -> None:
    """Atomically: callers parse the file the moment the runtime returns."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def wait_gone(pid: int, start: int, timeout: float = 5.0) -> None:
    """Wait for a process we cannot reap (a grandchild) to die or become a zombie."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = proc_start_time(pid)
        if now is None or (start and now != start):
            return
        time.sleep(0.002)


def _write_id_maps(pid: int, linux: Mapping[str, Any], rootless: bool) -> None:
    uid_maps = linux.get("uidMappings") or []
    gid_maps = linux.get("gidMappings") or []

    def fmt(maps: list[Mapping[str, Any]]) -> str:
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)

    if os.geteuid() != 0 or rootless:
        single_self = (
            len(uid_maps) == 1
            and uid_maps[0]["hostID"] == os.geteuid()
            and uid_maps[0]["size"] == 1
            and len(gid_maps) == 1
            and gid_maps[0]["hostID"] == os.getegid()
            and gid_maps[0]["size"] == 1
        )
        if not single_self:
            _newidmap("newuidmap", pid, uid_maps)
            _newidmap("newgidmap", pid, gid_maps)
            return
        # An unprivileged process may map only itself, and only after giving up setgroups.
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    _write_map(f"/proc/{pid}/uid_map", fmt(uid_maps), "linux.uidMappings")
    _write_map(f"/proc/{pid}/gid_map", fmt(gid_maps), "linux.gidMappings")


def _write_map(path: str, text: str, field: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise InvalidArgument(f"{field}: write {path}: {oserror_text(e)}") from None


def _newidmap(tool: str, pid: int, maps: list[Mapping[str, Any]]) -> None:
    import shutil
    import subprocess

    exe = shutil.which(tool)
    if exe is None:
        raise FailedPrecondition(
            f"{tool} not found: mapping subordinate ids needs the uidmap package"
        )
    args = [exe, str(pid)]
    for m in maps:
        args += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise FailedPrecondition(f"{tool}: {res.stderr.strip() or 'failed'}")


def create(ctx: Context, container_id: str, opts: CreateOptions) -> ContainerState:
    from kettle import cgroups

    bundle = os.path.abspath(opts.bundle)
    config, rootfs = spec.load(bundle)
    spec.validate(config)
    absolute_bind_sources(config, bundle)
    process = config["process"]
    linux = config.get("linux") or {}
    if process.get("terminal") and not (opts.console_socket or opts.console_fd):
        raise InvalidArgument(
            "process.terminal: cannot allocate tty if runc will detach without setting "
            "console socket"
        )
    if not process.get("terminal") and opts.console_socket:
        raise InvalidArgument("--console-socket: only valid with process.terminal set")
    plan = namespaces.plan(linux.get("namespaces"))
    store = ctx.store
    state_dir = store.create_dir(container_id)
    st = ContainerState(
        id=container_id,
        bundle=bundle,
        rootfs=rootfs,
        created=now_rfc3339(),
        annotations=dict(config.get("annotations") or {}),
        systemd_cgroup=ctx.systemd_cgroup,
        rootless=ctx.rootless,
        config=config,
    )
    cleanup = _Cleanup(ctx, st, state_dir)
    try:
        mgr = cgroups.new_manager(
            linux.get("cgroupsPath"),
            container_id,
            rootless=ctx.rootless,
            systemd=ctx.systemd_cgroup,
        )
        cleanup.mgr = mgr
        mgr.create()
        st.cgroup = mgr.to_state()
        store.save(st)
        # As runc: linux.devices are created, but only resources.devices (and runc's default
        # list) open the device cgroup to them.
        mgr.set(linux.get("resources") or {})
        _spawn(ctx, st, opts, config, rootfs, plan, state_dir, mgr, cleanup)
    except BaseException:
        cleanup.run()
        raise
    return st


class _Cleanup:
    """Undo a half-done create: kill the init, remove its cgroup and its state directory."""

    def __init__(self, ctx: Context, st: ContainerState, state_dir: str) -> None:
        self.ctx = ctx
        self.st = st
        self.state_dir = state_dir
        self.mgr: Any = None
        self.pid = 0
        self.pid_start = 0

    def run(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already gone: the goal of this step
            wait_gone(self.pid, self.pid_start)
        if self.mgr is not None:
            try:
                self.mgr.destroy()
            except KettleError as e:
                self.ctx.logger.warning(f"cleanup of cgroup failed: {e}")
        try:
            self.ctx.store.remove(self.st.id)
        except OSError as e:
            self.ctx.logger.warning(f"cleanup of {self.state_dir} failed: {e}")


def _spawn(
    ctx: Context,
    st: ContainerState,
    opts: CreateOptions,
    config: dict[str, Any],
    rootfs: str,
    plan: namespaces.Plan,
    state_dir: str,
    mgr: Any,
    cleanup: _Cleanup,
) -> None:
    linux = config.get("linux") or {}
    process = config["process"]
    hook_cfg = config.get("hooks") or {}
    need_runtime_hooks = bool(hook_cfg.get("prestart") or hook_cfg.get("createRuntime"))
    parent, child = sync.pair()
    listener: socket.socket | None = None
    console: socket.socket | None = opts.console_fd
    opened: list[tuple[str, int, str]] = []
    try:
        listener = _listen_exec_socket(state_dir)
        if console is None and opts.console_socket:
            console = init.connect_console(opts.console_socket)
        compiled = init.preload(process, linux.get("seccomp"), ctx.seccomp_programs)
        opened = namespaces.open_joins(plan)
        pid = os.fork()
    except BaseException:
        init.close_quietly([parent, child, listener, console], [fd for _, fd, _ in opened])
        raise
    if pid == 0:  # intermediate, then container init
        parent.close()

        def body() -> NoReturn:
            assert listener is not None
            _container_main(
                child,
                listener,
                console,
                st,
                opts,
                config,
                rootfs,
                plan,
                need_runtime_hooks,
                compiled,
            )

        init.intermediate(child, plan, opened, linux.get("timeOffsets"), process, body)
    init.close_quietly([child, listener, console], [fd for _, fd, _ in opened])
    try:
        init_pid = _converse(ctx, st, parent, pid, linux, mgr, cleanup, need_runtime_hooks)
    finally:
        parent.close()
        _reap(pid)
    if opts.pid_file:
        write_pid_file(opts.pid_file, init_pid)
    st.status = Status.CREATED.value
    ctx.store.save(st)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped already


def _converse(
    ctx: Context,
    st: ContainerState,
    chan: socket.socket,
    intermediate_pid: int,
    linux: Mapping[str, Any],
    mgr: Any,
    cleanup: _Cleanup,
    need_runtime_hooks: bool,
) -> int:
    """P's side of the setup conversation; returns the init's pid once it is ready."""
    init_pid = 0
    while True:
        msg = sync.recv(chan)
        if msg is None:
            raise Internal("container init exited before it was ready")
        kind = msg.get("type")
        if kind == "error":
            raise error_from_child(msg)
        if kind == "idmap":
            _write_id_maps(intermediate_pid, linux, ctx.rootless)
            sync.send(chan, "idmap-done")
        elif kind == "pid":
            init_pid = int(msg["pid"])
            cleanup.pid = init_pid
            _reap(intermediate_pid)
            start = proc_start_time(init_pid)
            if start is None:
                raise Internal("container init exited before it was ready")
            cleanup.pid_start = start
            st.pid, st.pid_start = init_pid, start
            # The init builds its mounts while we move it into its cgroup (the kernel makes
            # that first write wait for an RCU grace period, ~10 ms); it waits for
            # "cgroup-done" before its first cgroup mount and its cgroup namespace.
            sync.send(chan, "go", pid=init_pid)
            mgr.apply(init_pid)
            ctx.store.save(st)
            sync.send(chan, "cgroup-done")
        elif kind == "hooks":
            state = st.oci_state(Status.CREATING)
            hooks.run(st.config.get("hooks"), "prestart", state)
            hooks.run(st.config.get("hooks"), "createRuntime", state)
            sync.send(chan, "hooks-done")
        elif kind == "ready":
            return init_pid
        else:
            raise Internal(f"unexpected message from container init: {kind}")


def _listen_exec_socket(state_dir: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dir_fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        path = exec_sock_path(dir_fd)
        sock.bind(path)
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    sock.listen(1)
    return sock


def absolute_bind_sources(config: dict[str, Any], bundle: str) -> None:
    """Relative bind-mount sources are relative to the bundle (runtime spec): make them
    absolute here, so the init needs no chdir into a bundle its user may not enter."""
    for m in config.get("mounts") or ():
        source = m.get("source")
        options = m.get("options") or ()
        is_bind = m.get("type") == "bind" or "bind" in options or "rbind" in options
        if is_bind and isinstance(source, str) and source and not source.startswith("/"):
            m["source"] = os.path.join(bundle, source)


# --- the container's init (N) ------------------------------------------------------------------


def _container_main(
    chan: socket.socket,
    listener: socket.socket,
    console: socket.socket | None,
    st: ContainerState,
    opts: CreateOptions,
    config: dict[str, Any],
    rootfs: str,
    plan: namespaces.Plan,
    need_runtime_hooks: bool,
    compiled: Compiled | None,
) -> NoReturn:
    from kettle.runtime import caps
    from kettle.runtime import rootfs as rootfs_mod

    try:
        st.pid = int(sync.expect(chan, "go")["pid"])
        linux = config.get("linux") or {}
        process = config["process"]
        os.setsid()
        userns = plan.has("user")

        def joined_cgroup() -> None:
            sync.expect(chan, "cgroup-done")
            # Only now: the namespace's root is the cgroup we are in when we unshare it.
            if "cgroup" in plan.new:
                sc.unshare(sc.CLONE_NEWCGROUP)

        rootfs_mod.prepare(
            config, rootfs, userns=userns, rootless=st.rootless, before_cgroup=joined_cgroup
        )
        if process.get("terminal"):
            assert console is not None
            _setup_console(console, rootfs, process)
        if need_runtime_hooks:
            sync.send(chan, "hooks")
            sync.expect(chan, "hooks-done")
        # Hooks run in the container's namespaces get the pid as the container sees it.
        inside = st.oci_state(Status.CREATING)
        inside["pid"] = os.getpid()
        hooks.run(config.get("hooks"), "createContainer", inside)
        if config.get("hostname"):
            sc.sethostname(config["hostname"])
        if config.get("domainname"):
            sc.setdomainname(config["domainname"])
        # The seccomp agent's socket is a host path: connect while the host is still visible.
        agent = init.connect_seccomp_listener(linux.get("seccomp"))
        # sysctls go in after pivot_root but before /proc/sys is made read-only.
        rootfs_mod.finalize(
            config,
            rootfs,
            no_pivot=opts.no_pivot,
            after_pivot=lambda: spec.write_sysctls(linux.get("sysctl") or {}),
        )
        pers = linux.get("personality")
        if pers:
            sc.personality(0x0008 if pers.get("domain") == "LINUX32" else 0)
        if not opts.no_new_keyring:
            sc.join_session_keyring(f"_ses.{st.id}")
        # Fail at create, not at start, when the program cannot be found (runc does too).
        init.lookup_executable(
            list(process["args"]), list(process.get("env") or ()), process.get("cwd") or "/"
        )
        caps.validate(process.get("capabilities"))
        sync.send(chan, "ready")
        chan.close()
    except BaseException as e:
        init.child_fail(chan, e)
    # Blocked until `start` connects; a dead runtime cannot unblock us, only start or kill.
    conn: socket.socket | None = None
    try:
        # _socket's accept: accept4 with SOCK_CLOEXEC, returning the bare fd.
        conn = socket.socket(fileno=listener._accept()[0])  # type: ignore[attr-defined]
        listener.close()
        inside = st.oci_state(Status.CREATED)
        inside["pid"] = os.getpid()
        hooks.run(config.get("hooks"), "startContainer", inside)
        setgroups_ok = _setgroups_allowed()
        preserve = opts.preserve_fds + _listen_fds(process)
        path, args, env = init.finish_process(
            process,
            linux.get("seccomp"),
            preserve_fds=preserve,
            setgroups_allowed=setgroups_ok,
            state_json=init.seccomp_state(
                linux.get("seccomp"), st.pid, st.oci_state(Status.RUNNING)
            ),
            listener=agent,
            compiled=compiled,
        )
    except BaseException as e:
        init.child_fail(conn, e)
    init.exec_or_fail(conn, path, args, env)


def _listen_fds(process: dict[str, Any]) -> int:
    """systemd socket activation: pass LISTEN_FDS through as runc does."""
    raw = os.environ.get("LISTEN_FDS")
    if not raw or not raw.isdigit():
        return 0
    env = process.setdefault("env", [])
    env.append(f"LISTEN_FDS={raw}")
    env.append("LISTEN_PID=1")
    return int(raw)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except FileNotFoundError:
        return True


# Not exported by Python's termios; the same numbers on x86-64 and arm64.
_TIOCSPTLCK = 0x40045431
_TIOCGPTN = 0x80045430


def _setup_console(console: socket.socket, rootfs: str, process: Mapping[str, Any]) -> None:
    """Open a pty on the container's devpts, bind it on /dev/console, hand it over."""
    import fcntl
    import struct

    from kettle.runtime import rootfs as rootfs_mod

    ptmx = os.path.join(rootfs, "dev/pts/ptmx")
    try:
        master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        console.close()
        raise FailedPrecondition(
            f"process.terminal: open {ptmx}: {oserror_text(e)} (is devpts mounted on /dev/pts?)"
        ) from None
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        n = struct.unpack("i", fcntl.ioctl(master, _TIOCGPTN, struct.pack("i", 0)))[0]
        slave_path = os.path.join(rootfs, f"dev/pts/{n}")
        slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
        rootfs_mod.bind_console(rootfs, slave_path)
    except BaseException:
        os.close(master)
        console.close()
        raise
    init.hand_over_pty(console, master, slave, process)
