"""Finding what a container left behind: mounts, processes, cgroups; and reaping zombies."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z, ...), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2]


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    state = process_state(pid)
    return state is not None and state != "Z"


def reap_zombie_children() -> list[int]:
    """Reaps zombies whose parent is this process (it is a subreaper for containers)."""
    me = os.getpid()
    reaped = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if process_state(pid) == "Z" and parent_pid(pid) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped.append(pid)
    return reaped


def mounts_naming(fragment: str) -> list[str]:
    """Mount points in this mount namespace whose path or source contains `fragment`."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if fragment in line]


def processes_naming(fragment: str) -> list[str]:
    """Live processes (not this one) whose command line or cgroup path contains `fragment`."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = (entry / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if (fragment in cmdline or fragment in cgroup) and alive(int(entry.name)):
            found.append(f"pid {entry.name}: {cmdline.strip()}")
    return found


def cgroups_naming(fragment: str) -> list[str]:
    """cgroup directories, in every mounted hierarchy, whose name contains `fragment`."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        for root, dirs, _files in os.walk(hierarchy):
            found += [os.path.join(root, d) for d in dirs if fragment in d]
    return found


def wait_gone(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """Waits for processes to die; returns those still alive after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    remaining = [p for p in pids if alive(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [p for p in remaining if alive(p)]
    return remaining


def leaks_of(cid: str, bundle: Path | None, pids: Iterable[int] = ()) -> list[str]:
    """Everything container `cid` left behind, as readable lines; empty when clean."""
    problems = []
    for pid in wait_gone(pids):
        problems.append(f"process {pid} of container {cid} still alive")
    problems += [f"process: {p}" for p in processes_naming(cid)]
    problems += [f"cgroup: {c}" for c in cgroups_naming(cid)]
    problems += [f"mount: {m}" for m in mounts_naming(cid)]
    if bundle is not None and cid not in str(bundle):
        problems += [f"mount: {m}" for m in mounts_naming(str(bundle))]
    return problems


def remove_empty_cgroups(name: str) -> list[str]:
    """Removes cgroup directories called exactly `name` (ours: unique per test run) and their
    empty children; returns those that could not be removed (still holding processes)."""
    problems = []
    for hierarchy in CGROUP_ROOT.iterdir():
        for root, dirs, _files in os.walk(hierarchy):
            if name in dirs:
                target = Path(root) / name
                for sub, _d, _f in sorted(os.walk(target), key=lambda t: -len(t[0])):
                    try:
                        os.rmdir(sub)
                    except OSError as exc:
                        problems.append(f"cgroup {sub} not removable: {exc.strerror}")
    return problems
