"""Code that runs in the processes the runtime forks: the intermediate and the container init.

Process model of ``create`` (the runtime process is P):

    P ──fork──> I   joins namespaces given by path, unshares the user namespace (P writes its
                    id maps), then unshares the rest; forks N and exits at once
      I ──fork──> N the container's first process (pid 1 in a new pid namespace): waits until P
                    has put it into its cgroup, builds the root filesystem, reports ready to P,
                    then blocks in accept() on exec.sock until ``start`` connects, and execs the
                    user's program.

N is a grandchild of P, so once P exits N belongs to the caller's subreaper (containerd's shim,
conmon), just as with runc.  Every step here either succeeds or sends one error message to P and
exits; nothing here returns to the caller's code.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: its enums and selectors cost ~4 ms a start
import os
import sys

from kettle import syscalls as sc
from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, NotFound, oserror_text
from kettle.runtime import namespaces, sync

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket as stdsocket
    from collections.abc import Mapping
    from typing import Any, NoReturn

    from kettle.runtime.seccomp import Compiled, Programs


def child_fail(chan: socket.socket | None, exc: BaseException) -> NoReturn:
    """Report exc to the runtime (if anyone listens) and exit the child without cleanup."""
    msg = str(exc) if isinstance(exc, KettleError | OSError) else f"{type(exc).__name__}: {exc}"
    code = exc.code if isinstance(exc, KettleError) else "INTERNAL"
    try:
        if chan is not None:
            sync.send(chan, "error", msg=msg, code=code)
        else:
            os.write(2, f"kettle-runtime: {msg}\n".encode())
    except OSError:
        pass  # the runtime is gone; nobody is left to tell
    os._exit(1)


def preload(
    process: Mapping[str, Any], seccomp: Mapping[str, Any] | None, programs: Programs | None
) -> Compiled | None:
    """Import, before forking, every module the child needs after it leaves the host's files;
    returns the seccomp program compiled (kept in programs) when the profile allows it.

    Once the child has pivoted into the rootfs (create) or joined the container's mount
    namespace (exec), the interpreter's own files are out of reach: a lazy import there fails
    with ModuleNotFoundError, and libseccomp could no longer be loaded.
    """
    import _signal  # type: ignore[import-not-found]  # noqa: F401 - reset before execve

    from kettle.runtime import caps, rlimits  # noqa: F401

    if process.get("terminal"):
        # pty set-up and fd passing (struct, not array: array imports collections, ~3 ms)
        import fcntl  # noqa: F401
        import struct  # noqa: F401
        import termios  # noqa: F401
    if seccomp:
        if seccomp.get("listenerPath"):
            import socket  # noqa: F401 - send_fds, for the seccomp agent

        from kettle.runtime import seccomp as sec
        from kettle.syscalls import seccomp as scmp  # noqa: F401

        # Compiling validates the whole profile (a cached program was compiled, so validated,
        # from this very profile); also loads libseccomp.so while its path still resolves.
        compiled = programs.get(seccomp) if programs is not None else None
        if compiled is None:
            sec.validate(seccomp)
        return compiled
    return None


# --- intermediate ----------------------------------------------------------------------------


def intermediate(
    chan: socket.socket,
    plan: namespaces.Plan,
    opened: list[tuple[str, int, str]],
    time_offsets: Mapping[str, Any] | None,
    oom_process: Mapping[str, Any],
    body: Any,
) -> NoReturn:
    """Enter the container's namespaces and fork the process that lives in them.

    ``body`` is called in the grandchild; it never returns.
    """
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, 9)
        write_oom_score_adj(oom_process)
        namespaces.join_all(opened)
        if "user" in plan.new:
            sc.unshare(sc.CLONE_NEWUSER)
            sync.send(chan, "idmap")
            sync.expect(chan, "idmap-done")
        # Not dumpable from here until execve: no process in the container may open
        # /proc/<pid>/exe (the host's interpreter), fd or root of ours (the CVE-2019-5736
        # class).  Only now, since an unprivileged runtime must still write our id maps,
        # which needs /proc/<pid> to be owned by the user rather than by root.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        if "user" in plan.new or any(k == "user" for k, _ in plan.join):
            # Become root of the user namespace, as runc does, so that the mounts and files
            # made next belong to the container's root.
            try:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            except OSError as e:
                raise FailedPrecondition(
                    f"cannot become root in the user namespace (is uid 0 mapped?): {e.strerror}"
                ) from None
        flags = plan.unshare_flags
        if flags:
            sc.unshare(flags)
        if time_offsets and "time" in plan.new:
            _write_time_offsets(time_offsets)
        pid = os.fork()
        if pid == 0:
            body()
            os._exit(1)  # body never returns; this is only a guard
        sync.send(chan, "pid", pid=pid)
        os._exit(0)
    except BaseException as e:
        child_fail(chan, e)


def _write_time_offsets(offsets: Mapping[str, Any]) -> None:
    lines = []
    for clock in ("monotonic", "boottime"):
        value = offsets.get(clock)
        if value:
            lines.append(f"{clock} {int(value.get('secs', 0))} {int(value.get('nanosecs', 0))}\n")
    for clock in offsets:
        if clock not in ("monotonic", "boottime"):
            raise InvalidArgument(f"linux.timeOffsets.{clock}: unknown clock")
    with open("/proc/self/timens_offsets", "w") as f:
        for line in lines:
            f.write(line)
            f.flush()


# --- process attributes shared by init and exec -----------------------------------------------


def lookup_executable(args: list[str], env: list[str], cwd: str) -> str:
    """Resolve args[0] like execvp would, in the current root; fail early with runc's words."""
    if not args:
        raise InvalidArgument("process.args: must not be empty")
    name = args[0]
    if "/" in name:
        path = name if os.path.isabs(name) else os.path.join(cwd, name)
        if not os.path.exists(path):
            raise NotFound(f'exec: "{name}": stat {name}: no such file or directory')
        return path
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for item in env:
        if item.startswith("PATH="):
            search = item[5:]
    for d in search.split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise NotFound(f'exec: "{name}": executable file not found in $PATH')


def apply_lsm(process: Mapping[str, Any]) -> None:
    profile = process.get("apparmorProfile")
    if profile:
        if not apparmor_enabled():
            raise FailedPrecondition(
                f"process.apparmorProfile: apparmor is not enabled on this host ({profile})"
            )
        path = "/proc/self/attr/apparmor/exec"
        if not os.path.exists(path):
            path = "/proc/self/attr/exec"
        with open(path, "w") as f:
            f.write(f"exec {profile}")
    label = process.get("selinuxLabel")
    if label:
        if not selinux_enabled():
            raise FailedPrecondition(
                f"process.selinuxLabel: selinux is not enabled on this host ({label})"
            )
        with open("/proc/self/attr/exec", "w") as f:
            f.write(label)


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def apply_scheduling(process: Mapping[str, Any]) -> None:
    io = process.get("ioPriority")
    if io:
        classes = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
        cls = classes.get(io.get("class", ""))
        if cls is None:
            raise InvalidArgument(f"process.ioPriority.class: unknown class {io.get('class')!r}")
        sc.ioprio_set(cls, int(io.get("priority", 0)))
    sched = process.get("scheduler")
    if sched:
        policies = {
            "SCHED_OTHER": os.SCHED_OTHER,
            "SCHED_FIFO": os.SCHED_FIFO,
            "SCHED_RR": os.SCHED_RR,
            "SCHED_BATCH": os.SCHED_BATCH,
            "SCHED_IDLE": os.SCHED_IDLE,
        }
        policy = policies.get(sched.get("policy", ""))
        if policy is None:
            raise InvalidArgument(
                f"process.scheduler.policy: unsupported policy {sched.get('policy')!r}"
            )
        if sched.get("nice"):
            os.setpriority(os.PRIO_PROCESS, 0, int(sched["nice"]))
        os.sched_setscheduler(0, policy, os.sched_param(int(sched.get("priority", 0))))
    affinity = process.get("execCPUAffinity")
    if affinity and affinity.get("initial"):
        os.sched_setaffinity(0, parse_cpu_list(affinity["initial"]))


def parse_cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


def finish_process(
    process: Mapping[str, Any],
    seccomp: Mapping[str, Any] | None,
    *,
    preserve_fds: int,
    setgroups_allowed: bool,
    state_json: bytes | None = None,
    listener: stdsocket.socket | None = None,
    compiled: Compiled | None = None,
) -> tuple[str, list[str], dict[str, str]]:
    """Switch to the process's identity and confinement; return what to exec.

    Order (as runc): umask, bounding set, seccomp when it needs CAP_SYS_ADMIN, user switch
    keeping caps, capability sets, cwd, no_new_privs, seccomp as late as possible otherwise.
    """
    from kettle.runtime import caps, rlimits

    user = process.get("user") or {}
    args = list(process.get("args") or [])
    env = [str(e) for e in process.get("env") or ()]
    cwd = process.get("cwd") or "/"
    nnp = bool(process.get("noNewPrivileges"))

    rlimits.apply(process.get("rlimits"))
    apply_scheduling(process)
    apply_lsm(process)
    os.umask(int(user.get("umask", 0o022)) if user.get("umask") is not None else 0o022)
    capabilities = process.get("capabilities")
    caps.drop_bounding(capabilities)
    # Before any seccomp filter: a profile that predates close_range(2) (runtime-tools'
    # default one, older Docker ones) makes it fail with EPERM once the filter is loaded.
    _close_extra_fds(preserve_fds)
    notify_fd: int | None = None
    if seccomp and not nnp:
        notify_fd = _load_seccomp(seccomp, state_json, listener, compiled)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    gid = int(user.get("gid", 0))
    uid = int(user.get("uid", 0))
    extra = [int(g) for g in user.get("additionalGids") or ()]
    if setgroups_allowed:
        os.setgroups(extra)
    elif extra:
        raise FailedPrecondition(
            "process.user.additionalGids: setgroups is denied in this user namespace"
        )
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    caps.apply(capabilities)
    try:
        os.chdir(cwd)
    except OSError as e:
        raise FailedPrecondition(f"process.cwd: chdir to {cwd}: {oserror_text(e)}") from None
    if nnp:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    if seccomp and nnp:
        notify_fd = _load_seccomp(seccomp, state_json, listener, compiled)
    if notify_fd is not None:
        os.close(notify_fd)
    path = lookup_executable(args, env, cwd)
    # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive execve, and the container's
    # program must start with the default dispositions (as under runc).
    import _signal

    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
    envd: dict[str, str] = {}
    for item in env:
        k, sep, v = item.partition("=")
        if sep:
            envd[k] = v
    if "HOME" not in envd:
        envd["HOME"] = home_of(uid)
    return path, args, envd


def home_of(uid: int) -> str:
    """HOME for a process whose spec sets none: the container's /etc/passwd, else "/" (runc)."""
    try:
        with open("/etc/passwd", "rb") as f:
            for raw in f:
                fields = raw.decode(errors="replace").rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass  # no passwd file in the image: "/" is what runc gives too
    return "/"


def _load_seccomp(
    seccomp: Mapping[str, Any],
    state_json: bytes | None,
    listener: stdsocket.socket | None,
    compiled: Compiled | None,
) -> int | None:
    """Load the filter; with SCMP_ACT_NOTIFY the fd goes to the agent on ``listener``.

    The listener socket is connected before pivot_root (listenerPath is a host path).
    """
    if compiled is not None:
        compiled.load()
        return None
    from kettle.runtime import seccomp as sec

    return sec.load(seccomp, listener_state=state_json or b"{}", listener=listener)


def connect_seccomp_listener(seccomp: Mapping[str, Any] | None) -> stdsocket.socket | None:
    if not seccomp or not seccomp.get("listenerPath"):
        return None
    from kettle.runtime import seccomp as sec

    return sec.connect_listener(str(seccomp["listenerPath"]))


def seccomp_state(
    seccomp: Mapping[str, Any] | None, pid: int, state: Mapping[str, Any]
) -> bytes | None:
    if not seccomp or not seccomp.get("listenerPath"):
        return None
    from kettle.runtime import seccomp as sec

    return sec.container_process_state(
        pid=pid,
        state=state,
        metadata=str(seccomp.get("listenerMetadata") or ""),
        oci_version=str(state.get("ociVersion", "1.0.2")),
    )


def write_oom_score_adj(process: Mapping[str, Any]) -> None:
    """Set before any namespace is entered: lowering it needs the host's privileges."""
    value = process.get("oomScoreAdj")
    if value is None:
        return
    _write_oom_score_adj(int(value))


def _write_oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        raise FailedPrecondition(
            f"process.oomScoreAdj: cannot set {value}: {oserror_text(e)}"
        ) from None


def _close_extra_fds(preserve_fds: int) -> None:
    first = 3 + max(preserve_fds, 0)
    for fd in range(3, first):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass  # a gap in the preserved range: nothing to pass on there
    sc.close_range(first, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)


def connect_console(path: str) -> socket.socket:
    """Connect to the caller's --console-socket (a host path, so before any fork)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise InvalidArgument(f"--console-socket {path}: connect: {oserror_text(e)}") from None
    return sock


def close_quietly(socks: list[socket.socket | None], fds: list[int]) -> None:
    """Release what a failed set-up opened; each close is attempted whatever the others do."""
    for s in socks:
        if s is not None:
            s.close()
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass  # already closed by the step that failed


def hand_over_pty(
    console: socket.socket, master: int, slave: int, process: Mapping[str, Any]
) -> None:
    """Size the pty, send its master to the console socket and make the slave our terminal.

    runc's console protocol: one sendmsg with the name as data and exactly one fd in
    SCM_RIGHTS.  The caller's stdio must not stay open here afterwards, or a caller waiting
    for EOF on its pipes (go-runc in terminal mode) would hang: the slave replaces 0, 1 and 2.
    """
    import fcntl
    import struct
    import termios

    try:
        size = process.get("consoleSize")
        if size:
            ws = struct.pack("HHHH", int(size.get("height", 0)), int(size.get("width", 0)), 0, 0)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, ws)
        console.sendmsg(
            [b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", master))]
        )
    finally:
        os.close(master)
        console.close()
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def exec_or_fail(
    chan: socket.socket | None, path: str, args: list[str], env: dict[str, str]
) -> NoReturn:
    try:
        sys.stdout.flush()
        os.execve(path, args, env)
    except OSError as e:
        child_fail(chan, FailedPrecondition(f'exec: "{args[0]}": {oserror_text(e)}'))
