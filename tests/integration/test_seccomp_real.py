"""Seccomp filters loaded for real, in forked children; the parent checks what the kernel did."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import platform
import resource
import select
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kettle import syscalls as sc
from kettle.errors import FailedPrecondition, SyscallError
from kettle.runtime import seccomp as rs

pytestmark = pytest.mark.privileged

#: A safety net against a hung child; no test measures time.
SAFETY_S = 60


@pytest.fixture(autouse=True)
def _libseccomp() -> None:
    from kettle.syscalls import seccomp as scmp

    try:
        scmp.lib()
    except FailedPrecondition as exc:
        pytest.skip(str(exc))


def _no_core_dumps() -> None:
    # core_pattern here is "core" in the cwd: a child that dies of SIGSYS must not leave one.
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    sc.prctl(sc.PR_SET_DUMPABLE, 0)


class Child:
    def __init__(self, pid: int, result: Any, status: int) -> None:
        self.pid = pid
        self.result = result  # {"ok": value} or {"error": text}; None when it died
        self.status = status


def run(body: Callable[[], Any]) -> Child:
    """Run body in a forked child, reap it, and return what it reported."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            _no_core_dumps()
            try:
                out: dict[str, Any] = {"ok": body()}
            except BaseException as exc:
                out = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(wfd, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        ready, _, _ = select.select([rfd], [], [], SAFETY_S)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        with os.fdopen(rfd, "rb") as fh:
            raw = fh.read()
    finally:
        _, status = _reap(pid)
    return Child(pid, json.loads(raw) if raw else None, status)


def _reap(pid: int) -> tuple[int, int]:
    try:
        return os.waitpid(pid, 0)
    except ChildProcessError:
        return pid, 0


def ok(c: Child) -> Any:
    assert c.result is not None, f"child died: status {c.status}"
    assert "error" not in c.result, c.result["error"]
    return c.result["ok"]


def errno_of(fn: Callable[[], Any]) -> int:
    """0 when fn succeeds, else its errno."""
    try:
        fn()
    except OSError as exc:
        return exc.errno or -1
    except SyscallError as exc:
        return exc.errno
    return 0


def status_fields(*names: str) -> dict[str, str]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in names:
                out[key] = value.strip()
    return out


# --- actions --------------------------------------------------------------------------------------


def test_errno_default_and_errno_ret(tmp_path: Path) -> None:
    def body() -> dict[str, int]:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                    {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                ],
            }
        )
        return {
            "mkdir": errno_of(lambda: os.mkdir(tmp_path / "a")),
            "rmdir": errno_of(lambda: os.rmdir(tmp_path)),
            "getcwd": errno_of(os.getcwd),
        }

    assert ok(run(body)) == {"mkdir": errno.EPERM, "rmdir": errno.ENOSYS, "getcwd": 0}
    assert not (tmp_path / "a").exists()


def test_filter_is_in_and_no_new_privs_is_left_alone() -> None:
    def body() -> dict[str, str]:
        rs.load({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})
        return status_fields("Seccomp", "Seccomp_filters", "NoNewPrivs")

    assert ok(run(body)) == {"Seccomp": "2", "Seccomp_filters": "1", "NoNewPrivs": "0"}


def test_kill_process() -> None:
    def body() -> None:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}],
            }
        )
        os.uname()

    c = run(body)
    assert c.result is None
    assert os.WIFSIGNALED(c.status)
    assert os.WTERMSIG(c.status) == signal.SIGSYS


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"])
def test_kill_thread_of_a_single_threaded_process(action: str) -> None:
    def body() -> None:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["uname"], "action": action}],
            }
        )
        os.uname()

    c = run(body)
    assert os.WIFSIGNALED(c.status)
    assert os.WTERMSIG(c.status) == signal.SIGSYS


def test_trap_delivers_a_catchable_sigsys() -> None:
    def body() -> list[int]:
        seen: list[int] = []
        signal.signal(signal.SIGSYS, lambda signum, frame: seen.append(signum))
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_TRAP"}],
            }
        )
        # The call is skipped; what it "returns" is whatever the register held, so only the
        # signal, and that the process lives on to report it, tell TRAP from KILL.
        with contextlib.suppress(OSError):
            os.uname()
        return seen

    assert ok(run(body)) == [signal.SIGSYS]


def test_trace_without_tracer_fails_with_enosys_and_log_allows() -> None:
    def body() -> dict[str, int]:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["uname"], "action": "SCMP_ACT_TRACE"},
                    {"names": ["getcwd"], "action": "SCMP_ACT_LOG"},
                ],
            }
        )
        return {"uname": errno_of(os.uname), "getcwd": errno_of(os.getcwd)}

    assert ok(run(body)) == {"uname": errno.ENOSYS, "getcwd": 0}


def test_default_errno_ret() -> None:
    # A deny-by-default filter: only what Python needs to report and exit is allowed.
    def body() -> int:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 13,
                "syscalls": [
                    {
                        "names": ["write", "exit_group", "exit", "brk", "mmap", "munmap", "close"],
                        "action": "SCMP_ACT_ALLOW",
                    },
                    {
                        "names": ["rt_sigreturn", "rt_sigprocmask", "futex"],
                        "action": "SCMP_ACT_ALLOW",
                    },
                ],
            }
        )
        return errno_of(os.getcwd)

    assert ok(run(body)) == errno.EACCES


# --- argument conditions -----------------------------------------------------------------------


QUERY = 0xFFFFFFFF  # personality(0xffffffff) only reads the persona
PER_LINUX32 = 0x0008
ADDR_NO_RANDOMIZE = 0x0040000


def _personality_errnos(seccomp_args: list[dict[str, Any]], values: list[int]) -> list[int]:
    def body() -> list[int]:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["personality"],
                        "action": "SCMP_ACT_ERRNO",
                        "errnoRet": 22,
                        "args": seccomp_args,
                    }
                ],
            }
        )
        # A persona that goes through only changes what uname reports in this child.
        return [errno_of(functools.partial(sc.personality, v)) for v in values]

    return list(ok(run(body)))


def test_arg_ne() -> None:
    errs = _personality_errnos(
        [{"index": 0, "value": QUERY, "op": "SCMP_CMP_NE"}], [QUERY, PER_LINUX32]
    )
    assert errs == [0, errno.EINVAL]


def test_arg_masked_eq() -> None:
    errs = _personality_errnos(
        [{"index": 0, "value": 0xFF, "valueTwo": PER_LINUX32, "op": "SCMP_CMP_MASKED_EQ"}],
        [PER_LINUX32, PER_LINUX32 | ADDR_NO_RANDOMIZE, ADDR_NO_RANDOMIZE, QUERY],
    )
    assert errs == [errno.EINVAL, errno.EINVAL, 0, 0]


def test_args_on_one_index_match_any() -> None:
    errs = _personality_errnos(
        [
            {"index": 0, "value": PER_LINUX32, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": ADDR_NO_RANDOMIZE, "op": "SCMP_CMP_EQ"},
        ],
        [PER_LINUX32, ADDR_NO_RANDOMIZE, QUERY],
    )
    assert errs == [errno.EINVAL, errno.EINVAL, 0]


def test_args_on_several_indexes_match_all() -> None:
    def body() -> list[int]:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["getpriority"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [
                            {"index": 0, "value": os.PRIO_PROCESS, "op": "SCMP_CMP_EQ"},
                            {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"},
                        ],
                    }
                ],
            }
        )
        return [
            errno_of(lambda: os.getpriority(os.PRIO_PROCESS, 0)),
            errno_of(lambda: os.getpriority(os.PRIO_PROCESS, os.getpid())),
            errno_of(lambda: os.getpriority(os.PRIO_PGRP, 0)),
        ]

    assert ok(run(body)) == [errno.EPERM, 0, 0]


@pytest.mark.parametrize(
    ("op", "denied"),
    [
        ("SCMP_CMP_LT", [True, False, False]),
        ("SCMP_CMP_LE", [True, True, False]),
        ("SCMP_CMP_EQ", [False, True, False]),
        ("SCMP_CMP_NE", [True, False, True]),
        ("SCMP_CMP_GE", [False, True, True]),
        ("SCMP_CMP_GT", [False, False, True]),
    ],
)
def test_arg_comparisons(op: str, denied: list[bool]) -> None:
    def body() -> list[int]:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["getpriority"],
                        "action": "SCMP_ACT_ERRNO",
                        "errnoRet": errno.E2BIG,
                        "args": [{"index": 1, "value": 0x10, "op": op}],
                    }
                ],
            }
        )
        # Below, at and above 0x10; a call that goes through may fail with ESRCH, never E2BIG.
        return [
            errno_of(functools.partial(os.getpriority, os.PRIO_PROCESS, who))
            for who in (0x0F, 0x10, 0x11)
        ]

    assert [e == errno.E2BIG for e in ok(run(body))] == denied


# --- flags ----------------------------------------------------------------------------------------


def test_tsync_reaches_every_thread() -> None:
    def body() -> dict[str, str]:
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        try:
            rs.load(
                {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
                }
            )
            out = {}
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/status") as fh:
                    for line in fh:
                        if line.startswith("Seccomp:"):
                            out[tid] = line.split()[1]
            return out
        finally:
            stop.set()
            t.join()

    seen = ok(run(body))
    assert len(seen) == 2
    assert set(seen.values()) == {"2"}


def test_spec_allow_keeps_speculative_store_bypass_unmitigated() -> None:
    def body(flags: list[str]) -> str:
        rs.load({"defaultAction": "SCMP_ACT_ALLOW", "flags": flags})
        return status_fields("Speculation_Store_Bypass")["Speculation_Store_Bypass"]

    baseline = ok(run(lambda: body([])))
    if "mitigated" not in baseline:
        pytest.skip(f"seccomp does not force the SSB mitigation on this CPU ({baseline})")
    with_flag = ok(run(lambda: body(["SECCOMP_FILTER_FLAG_SPEC_ALLOW"])))
    assert "mitigated" not in with_flag


def test_log_flag_loads() -> None:
    def body() -> int:
        rs.load(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
            }
        )
        return errno_of(lambda: os.mkdir("/nonexistent-kettle-dir/x"))

    assert ok(run(body)) == errno.EPERM


# --- a real-world profile -------------------------------------------------------------------------

CONTAINERS_PROFILE = Path("/usr/share/containers/seccomp.json")


def _oci_from_containers_profile(path: Path) -> dict[str, Any]:
    """containers/common's profile format to an OCI seccomp object for a root process with
    the default capabilities (entries conditional on capabilities or kernels are left out)."""
    raw = json.loads(path.read_text())
    native = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    arches = {
        "amd64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    }.get(native, [])
    out: dict[str, Any] = {
        "defaultAction": raw["defaultAction"],
        "architectures": arches,
        "syscalls": [],
    }
    if "defaultErrnoRet" in raw:
        out["defaultErrnoRet"] = raw["defaultErrnoRet"]
    for entry in raw["syscalls"]:
        inc = entry.get("includes") or {}
        exc = entry.get("excludes") or {}
        if inc.get("caps") or inc.get("minKernel"):
            continue
        if inc.get("arches") and native not in inc["arches"]:
            continue
        if native in (exc.get("arches") or []):
            continue
        rule = {"names": entry["names"], "action": entry["action"]}
        if entry.get("args"):
            rule["args"] = entry["args"]
        if "errnoRet" in entry:
            rule["errnoRet"] = entry["errnoRet"]
        out["syscalls"].append(rule)
    return out


def test_containers_default_profile_runs_a_program(tmp_path: Path) -> None:
    if not CONTAINERS_PROFILE.is_file():
        pytest.skip(f"{CONTAINERS_PROFILE} is not installed")
    if not os.access("/bin/busybox", os.X_OK):
        pytest.skip("/bin/busybox is not installed")
    profile = _oci_from_containers_profile(CONTAINERS_PROFILE)
    rs.validate(profile, rules=True)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            _no_core_dumps()
            rs.load(profile)
            report = {
                "personality_odd": errno_of(lambda: sc.personality(0x1234)),
                "personality_query": errno_of(lambda: sc.personality(QUERY)),
                "mkdir": errno_of(lambda: os.mkdir(tmp_path / "d")),
            }
            os.write(wfd, json.dumps(report).encode())
            os.close(wfd)
            os.execv("/bin/busybox", ["busybox", "true"])
        finally:
            os._exit(127)
    os.close(wfd)
    try:
        with os.fdopen(rfd, "rb") as fh:
            report = json.loads(fh.read() or b"null")
    finally:
        _, status = _reap(pid)
    assert report == {"personality_odd": errno.ENOSYS, "personality_query": 0, "mkdir": 0}
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# --- SCMP_ACT_NOTIFY ------------------------------------------------------------------------------


def _notify_profile(listener: Path) -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": str(listener),
        "listenerMetadata": "kettle-test",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}],
    }


def _agent(server: socket.socket, child_pid: int) -> dict[str, Any]:
    """Play the seccomp agent: take the fd, answer the first getppid with 4242 and let the
    second one through."""
    from kettle.syscalls import seccomp as scmp

    server.settimeout(SAFETY_S)
    conn, _ = server.accept()
    with conn:
        conn.settimeout(SAFETY_S)
        msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
    assert len(fds) == 1, f"expected one fd, got {fds}"
    fd = fds[0]
    state = json.loads(msg)
    answers = []
    try:
        getppid = scmp.syscall_resolve_name("getppid")
        with scmp.Notification() as notif:
            for flags in (0, scmp.USER_NOTIF_FLAG_CONTINUE):
                ready, _, _ = select.select([fd], [], [], SAFETY_S)
                assert ready, "no notification came"
                req = notif.receive(fd)
                answers.append((req.pid, req.data.nr))
                assert notif.id_valid(fd, req.id)
                notif.respond(fd, req.id, val=4242 if flags == 0 else 0, flags=flags)
        assert all(nr == getppid for _, nr in answers)
    finally:
        os.close(fd)
    return {"state": state, "pids": [p for p, _ in answers]}


def _child_side() -> dict[str, Any]:
    first = os.getppid()
    second = os.getppid()
    notify_fds = [
        n for n in os.listdir("/proc/self/fd") if "seccomp" in _readlink(f"/proc/self/fd/{n}")
    ]
    return {"first": first, "second": second, "leftover_fds": notify_fds}


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_notify_sent_by_load(tmp_path: Path) -> None:
    sock_path = tmp_path / "agent.sock"
    parent = os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(sock_path))
        server.listen(1)

        def body() -> dict[str, Any]:
            state = rs.container_process_state(
                pid=os.getpid(), state={"id": "t", "status": "creating"}, metadata="kettle-test"
            )
            assert rs.load(_notify_profile(sock_path), listener_state=state) is None
            return _child_side()

        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(rfd)
                sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
                try:
                    out: Any = {"ok": body()}
                except BaseException as exc:
                    out = {"error": f"{type(exc).__name__}: {exc}"}
                os.write(wfd, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(wfd)
        try:
            seen = _agent(server, pid)
            with os.fdopen(rfd, "rb") as fh:
                result = json.loads(fh.read())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
    assert "error" not in result, result["error"]
    assert result["ok"] == {"first": 4242, "second": parent, "leftover_fds": []}
    assert seen["pids"] == [pid, pid]
    assert seen["state"] == {
        "ociVersion": "1.0.2",
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": "kettle-test",
        "state": {"id": "t", "status": "creating"},
    }


def test_notify_fd_returned_then_sent(tmp_path: Path) -> None:
    sock_path = tmp_path / "agent.sock"
    parent = os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(sock_path))
        server.listen(1)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(rfd)
                sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
                try:
                    fd = rs.load(_notify_profile(sock_path))
                    assert fd is not None
                    rs.send_notify_fd(str(sock_path), fd, b'{"pid":0}')
                    os.close(fd)
                    out: Any = {"ok": _child_side()}
                except BaseException as exc:
                    out = {"error": f"{type(exc).__name__}: {exc}"}
                os.write(wfd, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(wfd)
        try:
            seen = _agent(server, pid)
            with os.fdopen(rfd, "rb") as fh:
                result = json.loads(fh.read())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
    assert "error" not in result, result["error"]
    assert result["ok"] == {"first": 4242, "second": parent, "leftover_fds": []}
    assert seen["state"] == {"pid": 0}


def test_notify_only_on_unknown_syscalls_makes_no_listener(tmp_path: Path) -> None:
    def body() -> Any:
        profile = _notify_profile(tmp_path / "nobody-listens.sock")
        profile["syscalls"][0]["names"] = ["no_such_syscall_anywhere"]
        return rs.load(profile, listener_state=b"{}")

    assert ok(run(body)) is None


def test_loading_without_nnp_needs_cap_sys_admin() -> None:
    def body() -> None:
        _, permitted, _ = sc.capget()
        sc.capset(permitted & ~(1 << 21), permitted, 0)  # CAP_SYS_ADMIN out of effective
        rs.load({"defaultAction": "SCMP_ACT_ALLOW"})

    c = run(body)
    assert c.result is not None
    assert c.result["error"] == (
        "SyscallError: seccomp_load (linux.seccomp: without no_new_privs loading a filter"
        " needs CAP_SYS_ADMIN): permission denied"
    )


def test_send_notify_fd_names_the_listener_path(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(SyscallError) as info:
            rs.send_notify_fd(str(tmp_path / "nobody.sock"), r, b"{}")
    finally:
        os.close(r)
        os.close(w)
    assert info.value.errno == errno.ENOENT
    assert "nobody.sock" in str(info.value) and "linux.seccomp.listenerPath" in str(info.value)


# --- compiled programs and their cache (compile_cached) -------------------------------------------

DENY_MKDIR: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ],
}


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / rs.CACHE_DIR).glob("*.bpf"))


def test_compiled_program_does_what_libseccomps_load_does(tmp_path: Path) -> None:
    compiled = rs.compile_cached(DENY_MKDIR, str(tmp_path / "root"))
    assert compiled is not None

    def body() -> dict[str, Any]:
        assert compiled is not None
        compiled.load()
        return {
            "mkdir": errno_of(lambda: os.mkdir(tmp_path / "a")),
            "rmdir": errno_of(lambda: os.rmdir(tmp_path)),
            "getcwd": errno_of(os.getcwd),
            **status_fields("Seccomp", "Seccomp_filters", "NoNewPrivs"),
        }

    assert ok(run(body)) == {
        "mkdir": errno.EPERM,
        "rmdir": errno.ENOSYS,
        "getcwd": 0,
        "Seccomp": "2",
        "Seccomp_filters": "1",
        "NoNewPrivs": "0",
    }
    assert not (tmp_path / "a").exists()


def test_compiled_program_is_cached_once_per_profile_and_reused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = rs.compile_cached(DENY_MKDIR, str(root))
    files = _cache_files(root)
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert (root / rs.CACHE_DIR).stat().st_mode & 0o777 == 0o700
    again = rs.compile_cached(json.loads(json.dumps(DENY_MKDIR)), str(root))
    assert first is not None and again is not None
    assert again.program == first.program == files[0].read_bytes()
    assert _cache_files(root) == files
    other = rs.compile_cached({"defaultAction": "SCMP_ACT_ALLOW"}, str(root))
    assert other is not None and other.program != first.program
    assert len(_cache_files(root)) == 2


@pytest.mark.parametrize("tamper", ["world-writable", "symlink"])
def test_a_cache_entry_others_could_have_written_is_not_used(tmp_path: Path, tamper: str) -> None:
    root = tmp_path / "root"
    rs.compile_cached(DENY_MKDIR, str(root))
    (entry,) = _cache_files(root)
    allow_all = rs.compile_cached({"defaultAction": "SCMP_ACT_ALLOW"}, str(tmp_path / "other"))
    assert allow_all is not None
    entry.unlink()
    if tamper == "world-writable":
        entry.write_bytes(allow_all.program)
        entry.chmod(0o666)
    else:
        planted = tmp_path / "planted.bpf"
        planted.write_bytes(allow_all.program)
        planted.chmod(0o600)
        entry.symlink_to(planted)
    compiled = rs.compile_cached(DENY_MKDIR, str(root))
    assert compiled is not None and compiled.program != allow_all.program

    def body() -> int:
        assert compiled is not None
        compiled.load()
        return errno_of(lambda: os.mkdir(tmp_path / "a"))

    assert ok(run(body)) == errno.EPERM


def test_compiled_program_keeps_the_profiles_flags(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }
    compiled = rs.compile_cached(profile, str(tmp_path))
    assert compiled is not None
    assert compiled.flags == sc.SECCOMP_FILTER_FLAG_TSYNC | sc.SECCOMP_FILTER_FLAG_LOG

    def body() -> dict[str, Any]:
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        try:
            assert compiled is not None
            compiled.load()
            seen = {}
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/status") as fh:
                    seen[tid] = next(ln.split()[1] for ln in fh if ln.startswith("Seccomp:"))
            return {"threads": sorted(seen.values()), "mkdir": errno_of(lambda: os.mkdir("/x/y"))}
        finally:
            stop.set()
            t.join()

    assert ok(run(body)) == {"threads": ["2", "2"], "mkdir": errno.EPERM}


def test_a_profile_with_a_listener_is_not_compiled_ahead(tmp_path: Path) -> None:
    assert rs.compile_cached(_notify_profile(tmp_path / "agent.sock"), str(tmp_path)) is None
    assert rs.compile_cached(None, str(tmp_path)) is None
    assert not (tmp_path / rs.CACHE_DIR).exists()


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    for errno_ret in range(1, 41):
        profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno_ret}
        assert rs.compile_cached(profile, str(tmp_path)) is not None
    assert len(_cache_files(tmp_path)) == 32


def test_an_unwritable_cache_still_gives_the_program(tmp_path: Path) -> None:
    (tmp_path / rs.CACHE_DIR).write_text("not a directory")
    compiled = rs.compile_cached(DENY_MKDIR, str(tmp_path))
    assert compiled is not None and len(compiled.program) % 8 == 0


def test_compiled_load_without_nnp_needs_cap_sys_admin(tmp_path: Path) -> None:
    compiled = rs.compile_cached({"defaultAction": "SCMP_ACT_ALLOW"}, str(tmp_path))
    assert compiled is not None

    def body() -> None:
        assert compiled is not None
        _, permitted, _ = sc.capget()
        sc.capset(permitted & ~(1 << 21), permitted, 0)  # CAP_SYS_ADMIN out of effective
        compiled.load()

    c = run(body)
    assert c.result is not None
    assert c.result["error"] == (
        "SyscallError: seccomp (linux.seccomp: without no_new_privs loading a filter"
        " needs CAP_SYS_ADMIN): permission denied"
    )
