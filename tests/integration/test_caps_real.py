"""Capabilities and rlimits applied for real in forked children, read back from /proc/<pid>."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import select
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kettle import syscalls as sc
from kettle.errors import FailedPrecondition
from kettle.runtime import caps, rlimits

pytestmark = pytest.mark.privileged

SAFETY_S = 60  # against a hung child; no test measures time
BUSYBOX = "/bin/busybox"
UID = GID = 1000


def mask(*names: str) -> int:
    m = 0
    for n in names:
        m |= 1 << caps.CAPS[n]
    return m


@contextlib.contextmanager
def held_child(body: Callable[[], Any]) -> Iterator[tuple[int, Any]]:
    """Fork; the child runs body, reports {"ok": ...} or {"error": ...} and waits, alive, until
    the parent has looked at /proc/<pid>; then it exits and is reaped."""
    rfd, wfd = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            os.close(hold_w)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            try:
                out: dict[str, Any] = {"ok": body()}
            except BaseException as exc:
                out = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(wfd, json.dumps(out).encode())
            os.close(wfd)
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(wfd)
    os.close(hold_r)
    try:
        ready, _, _ = select.select([rfd], [], [], SAFETY_S)
        assert ready, "child did not report"
        raw = os.read(rfd, 1 << 20)
        yield pid, json.loads(raw) if raw else None
    finally:
        os.close(rfd)
        os.close(hold_w)  # lets the child exit
        _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def ok(report: Any) -> Any:
    assert report is not None, "child died"
    assert "error" not in report, report["error"]
    return report["ok"]


def become(capabilities: dict[str, Any] | None, uid: int = UID, gid: int = GID) -> None:
    """The init's sequence: bounding set, keepcaps around the user switch, then the sets."""
    caps.drop_bounding(capabilities)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    caps.apply(capabilities)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


SPEC = {
    "bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
    "effective": ["CAP_NET_BIND_SERVICE"],
    "permitted": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
    "inheritable": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
    "ambient": ["CAP_NET_BIND_SERVICE"],
}


def test_sets_after_switching_to_a_user() -> None:
    caps.validate(SPEC)
    with held_child(lambda: become(SPEC)) as (pid, report):
        ok(report)
        st = proc_status(pid)
    assert int(st["CapBnd"], 16) == mask(*SPEC["bounding"])
    assert int(st["CapEff"], 16) == mask("CAP_NET_BIND_SERVICE")
    assert int(st["CapPrm"], 16) == mask("CAP_NET_BIND_SERVICE", "CAP_CHOWN")
    assert int(st["CapInh"], 16) == mask("CAP_NET_BIND_SERVICE", "CAP_KILL")
    assert int(st["CapAmb"], 16) == mask("CAP_NET_BIND_SERVICE")
    assert st["Uid"].split() == [str(UID)] * 4


def test_no_capabilities_object_leaves_root_with_none() -> None:
    with held_child(lambda: become(None, uid=0, gid=0)) as (pid, report):
        ok(report)
        st = proc_status(pid)
    for key in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(st[key], 16) == 0, key
    assert st["Uid"].split() == ["0"] * 4


def test_current_names_reads_another_process() -> None:
    with held_child(lambda: become(SPEC)) as (pid, report):
        ok(report)
        names = caps.current_names(pid)
    assert names["effective"] == ["CAP_NET_BIND_SERVICE"]
    assert names["ambient"] == ["CAP_NET_BIND_SERVICE"]
    assert names["bounding"] == sorted(SPEC["bounding"], key=caps.CAPS.__getitem__)


def test_ambient_capabilities_survive_execve_of_a_user_program() -> None:
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip(f"{BUSYBOX} is not installed")
    # exec_r reads EOF once execve succeeded (the write end is close-on-exec), or the error.
    exec_r, exec_w = os.pipe()
    stdin_r, stdin_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(exec_r)
            os.close(stdin_w)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            os.dup2(stdin_r, 0)
            become(SPEC)
            os.execv(BUSYBOX, ["busybox", "cat"])
        except BaseException as exc:
            os.write(exec_w, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(127)
    os.close(exec_w)
    os.close(stdin_r)
    try:
        ready, _, _ = select.select([exec_r], [], [], SAFETY_S)
        assert ready, "child neither exec'd nor failed"
        failure = os.read(exec_r, 4096)
        assert failure == b"", failure.decode()
        st = proc_status(pid)
    finally:
        os.close(exec_r)
        os.close(stdin_w)  # cat sees EOF and exits
        _reap(pid)
    # After execve a non-root program keeps exactly its ambient set (plus the inheritable set
    # as it was), and the bounding set as the spec left it.
    assert int(st["CapAmb"], 16) == mask("CAP_NET_BIND_SERVICE")
    assert int(st["CapEff"], 16) == mask("CAP_NET_BIND_SERVICE")
    assert int(st["CapPrm"], 16) == mask("CAP_NET_BIND_SERVICE")
    assert int(st["CapInh"], 16) == mask("CAP_NET_BIND_SERVICE", "CAP_KILL")
    assert int(st["CapBnd"], 16) == mask(*SPEC["bounding"])


def test_dropping_the_bounding_set_without_setpcap_fails_clearly() -> None:
    def body() -> None:
        _, permitted, _ = sc.capget()
        everything_but_setpcap = caps.names(permitted & ~(1 << caps.CAPS["CAP_SETPCAP"]))
        caps.apply({"effective": everything_but_setpcap, "permitted": everything_but_setpcap})
        caps.drop_bounding({"bounding": ["CAP_CHOWN"]})

    with held_child(body) as (_, report):
        assert report is not None and "error" in report
    assert "SyscallError" in report["error"]
    assert (
        "process.capabilities.bounding: dropping CAP_DAC_OVERRIDE needs CAP_SETPCAP"
        in (report["error"])
    )


# --- rlimits ------------------------------------------------------------------------------------


def proc_limits(pid: int) -> dict[str, tuple[str, str]]:
    out = {}
    with open(f"/proc/{pid}/limits") as fh:
        next(fh)
        for line in fh:
            m = re.match(r"^(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)", line)
            if m:
                out[m.group(1)] = (m.group(2), m.group(3))
    return out


def test_rlimits_applied() -> None:
    _, core_hard = resource.getrlimit(resource.RLIMIT_CORE)
    spec: list[dict[str, Any]] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
        {"type": "RLIMIT_NPROC", "soft": 77, "hard": 99},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": rlimits.UNLIMITED},
    ]
    if core_hard != resource.RLIM_INFINITY:
        spec[2]["hard"] = core_hard
    rlimits.validate(spec)
    with held_child(lambda: rlimits.apply(spec)) as (pid, report):
        ok(report)
        limits = proc_limits(pid)
    assert limits["Max open files"] == ("512", "1024")
    assert limits["Max processes"] == ("77", "99")
    want_core_hard = "unlimited" if core_hard == resource.RLIM_INFINITY else str(core_hard)
    assert limits["Max core file size"] == ("0", want_core_hard)


def test_raising_a_hard_limit_fails_clearly() -> None:
    if rlimits.can_raise_hard_limits():
        pytest.skip("this process can raise hard limits (it has CAP_SYS_RESOURCE)")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spec: list[dict[str, Any]] = [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": hard + 1}]
    with pytest.raises(FailedPrecondition) as info:
        rlimits.validate(spec)
    assert f"RLIMIT_NOFILE hard limit {hard + 1} is above the current hard limit {hard}" in str(
        info.value
    )
    # And in the init, if validation was skipped: setrlimit's EPERM names the rlimit.
    with held_child(lambda: rlimits.apply(spec)) as (_, report):
        assert report is not None and "error" in report
    assert report["error"].startswith("SyscallError: setrlimit (process.rlimits[0]: RLIMIT_NOFILE")
    assert "operation not permitted" in report["error"]
