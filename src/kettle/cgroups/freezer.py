"""Freezing a cgroup and waiting until the kernel says it is really frozen (or thawed)."""

from __future__ import annotations

import errno
import os
import posixpath
import time

from kettle.cgroups import common, fsutil
from kettle.errors import SyscallError, Unavailable

#: how long a freeze may take before we give up and thaw back (runc: about 10 s too)
FREEZE_TIMEOUT = 10.0


# --- v1: freezer.state ----------------------------------------------------------------------


def v1_freeze(cg: str) -> None:
    path = posixpath.join(cg, "freezer.state")
    for attempt in range(1000):
        if attempt % 50 == 49:
            # A fork storm can keep a cgroup FREEZING forever; a short thaw lets it settle.
            fsutil.write(path, "THAWED")
            time.sleep(0.01)
        fsutil.write(path, "FROZEN")
        state = fsutil.read(path).strip()
        if state == "FROZEN":
            return
        if state != "FREEZING":
            raise Unavailable(f"cgroup {cg}: freezer.state is {state!r} after writing FROZEN")
        time.sleep(0.001)
    fsutil.write(path, "THAWED")
    raise Unavailable(f"cgroup {cg}: could not freeze (stuck in FREEZING); thawed it again")


def v1_thaw(cg: str) -> None:
    path = posixpath.join(cg, "freezer.state")
    fsutil.write(path, "THAWED")
    if not common.wait_until(lambda: fsutil.read(path).strip() == "THAWED", FREEZE_TIMEOUT):
        raise Unavailable(f"cgroup {cg}: still not THAWED after {FREEZE_TIMEOUT:.0f}s")


def v1_is_frozen(cg: str) -> bool:
    path = posixpath.join(cg, "freezer.state")
    state = fsutil.read(path).strip()
    if state == "FREEZING":
        # In the middle of a freeze: settle first, like runc's GetState.
        common.wait_until(lambda: fsutil.read(path).strip() != "FREEZING", 1.0)
        state = fsutil.read(path).strip()
    if state == "THAWED":
        return False
    try:
        # FROZEN may come from an ancestor; the container is paused only if we froze it.
        return fsutil.read(posixpath.join(cg, "freezer.self_freezing")).strip() == "1"
    except SyscallError as e:
        if e.errno == errno.ENOENT:  # kernels before 3.x lack self_freezing
            return state == "FROZEN"
        raise


# --- v2: cgroup.freeze + cgroup.events --------------------------------------------------------


def _frozen_flag(text: str) -> int | None:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "frozen":
            return int(value)
    return None


def _wait_events(cg: str, want: int, timeout: float) -> bool:
    """Wait until cgroup.events says "frozen <want>".

    kernfs wakes POLLPRI pollers when cgroup.events changes; re-reading through the same fd
    re-arms it.  On a plain file (unit tests) poll just times out each step.
    """
    import select  # only a v2 freeze waits: is_frozen() and thaw() do not load it

    path = posixpath.join(cg, "cgroup.events")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, path) from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)

        def check() -> bool:
            try:
                text = os.pread(fd, 4096, 0).decode()
            except OSError as e:
                raise SyscallError("read", e.errno or errno.EIO, path) from None
            return _frozen_flag(text) == want

        def wake(t: float) -> None:
            poller.poll(max(1, int(t * 1000)))

        return common.wait_until(check, timeout, wake)
    finally:
        os.close(fd)


def v2_freeze(cg: str) -> None:
    fsutil.write(posixpath.join(cg, "cgroup.freeze"), "1")
    if not _wait_events(cg, 1, FREEZE_TIMEOUT):
        fsutil.write(posixpath.join(cg, "cgroup.freeze"), "0")
        raise Unavailable(f"cgroup {cg}: not frozen after {FREEZE_TIMEOUT:.0f}s; thawed it again")


def v2_thaw(cg: str) -> None:
    # No wait for "frozen 0": a frozen ancestor keeps the cgroup frozen whatever we write
    # (runc only checks cgroup.freeze, too).
    path = posixpath.join(cg, "cgroup.freeze")
    fsutil.write(path, "0")
    if fsutil.read(path).strip() != "0":
        raise Unavailable(f"cgroup {cg}: cgroup.freeze is not 0 after thawing")


def v2_is_frozen(cg: str) -> bool:
    return fsutil.read(posixpath.join(cg, "cgroup.freeze")).strip() == "1"
