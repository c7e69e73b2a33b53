"""Steps both managers share: making and removing directory trees, walking pids, signalling."""

from __future__ import annotations

import errno
import os
import posixpath
import time

from kettle.cgroups import fsutil
from kettle.errors import FailedPrecondition, SyscallError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    Check = Callable[[], bool]
    Wake = Callable[[float], None]


def make_path(top: str, leaf: str) -> list[str]:
    """mkdir -p leaf below top (which must exist); the directories this call created."""
    rel = posixpath.relpath(leaf, top)
    if rel.startswith(".."):
        raise FailedPrecondition(f"cgroup {leaf} is outside its hierarchy {top}")
    if rel == ".":
        return []
    dirs = []
    cur = top
    for part in rel.split("/"):
        cur = posixpath.join(cur, part)
        dirs.append(cur)
    # The parents nearly always exist: mkdir from the leaf upwards until one succeeds or
    # exists, which is one mkdir in the common case instead of one per path component.
    # ENOTDIR walks up too, so that a file in the way is reported where it blocks.
    i = len(dirs) - 1
    while True:
        try:
            made = fsutil.mkdir(dirs[i])
            break
        except SyscallError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR) or i == 0:
                raise
            i -= 1
    created = [dirs[i]] if made else []
    for d in dirs[i + 1 :]:
        if fsutil.mkdir(d):
            created.append(d)
    return created


def tree_pids(path: str) -> list[int]:
    """Pids in the cgroup at path and every cgroup below it."""
    out = fsutil.read_pids(posixpath.join(path, "cgroup.procs"))
    for sub in fsutil.subdirs(path):
        out += tree_pids(sub)
    return out


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue  # exited between listing and signalling: nothing left to signal
        except OSError as e:
            raise SyscallError(
                "kill", e.errno or errno.EIO, detail=f"pid {pid} signal {sig}"
            ) from None


# rmdir of a cgroup whose last task is exiting fails with EBUSY for a short while.
_RMDIR_DELAYS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)


def remove_tree(path: str) -> None:
    """rmdir path and every cgroup below it, deepest first; gone already is fine."""
    # A container seldom makes cgroups of its own: try rmdir before listing the children.
    try:
        fsutil.rmdir(path)
        return
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return
        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise
    for sub in fsutil.subdirs(path):
        remove_tree(sub)
    for delay in (*_RMDIR_DELAYS, None):
        try:
            fsutil.rmdir(path)
            return
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                return
            if e.errno != errno.EBUSY or delay is None:
                raise
        time.sleep(delay)


def remove_if_unused(path: str) -> None:
    """rmdir a parent we created, unless another cgroup (another container's) still lives in it."""
    try:
        fsutil.rmdir(path)
    except SyscallError as e:
        # EBUSY/ENOTEMPTY: it has children now, which are not ours to remove.
        if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
            raise


def wait_until(check: Check, timeout: float, wake: Wake | None = None) -> bool:
    """Poll check() until it holds or timeout passes; wake(delay) may wait smarter than sleep."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if check():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        step = min(delay, left)
        if wake is not None:
            wake(step)
        else:
            time.sleep(step)
        delay = min(delay * 2, 0.05)


def enable_controllers(top: str, leaf: str, wanted: Sequence[str] | None, *, strict: bool) -> None:
    """Enable controllers in cgroup.subtree_control of every cgroup from top down to leaf's parent.

    wanted None means every controller each of them offers (runc's choice, so that later
    updates find them).  Without strict, a controller that cannot be enabled (processes in an
    inner cgroup, a threaded subtree) is left off: the error comes when a limit needs it.
    """
    rel = posixpath.relpath(leaf, top)
    if rel == ".":
        return
    cur = top
    for part in rel.split("/"):
        offered = fsutil.read(posixpath.join(cur, "cgroup.controllers")).split()
        enabled = fsutil.read(posixpath.join(cur, "cgroup.subtree_control")).split()
        missing = [c for c in (offered if wanted is None else wanted) if c not in enabled]
        if missing:
            path = posixpath.join(cur, "cgroup.subtree_control")
            absent = [c for c in missing if c not in offered]
            if absent and strict:
                raise FailedPrecondition(
                    f"cgroup v2 controller {absent[0]} is not available in {cur}"
                )
            missing = [c for c in missing if c in offered]
            try:
                if missing:
                    fsutil.write(path, " ".join("+" + c for c in missing))
            except SyscallError as e:
                if strict:
                    why = " (that cgroup has processes)" if e.errno == errno.EBUSY else ""
                    raise FailedPrecondition(
                        f"cannot enable {' '.join(missing)} in {path}: {e}{why}"
                    ) from None
                for c in missing:
                    try:
                        fsutil.write(path, "+" + c)
                    except SyscallError:
                        continue  # left off on purpose; see the docstring
        cur = posixpath.join(cur, part)
