"""What this host offers: the cgroup mode, where each v1 hierarchy is mounted, our own cgroups.

Every lookup goes through a :class:`Host` so that unit tests point it at a fake cgroupfs in a
temporary directory (a fake mountinfo and /proc/self/cgroup included).
"""

from __future__ import annotations

import os
import posixpath

from kettle.cgroups import fsutil

# Not typing.TYPE_CHECKING: importing typing (and the re, enum and collections it pulls in)
# would cost several milliseconds on every runtime invocation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Mode = Literal["v1", "hybrid", "v2"]
else:

    def __getattr__(name: str) -> object:
        # Mode stays importable at run time without paying for typing on every import.
        if name == "Mode":
            from typing import Literal

            return Literal["v1", "hybrid", "v2"]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DEFAULT_ROOT = "/sys/fs/cgroup"

#: v1 controllers that a container joins (runc's list), plus the systemd named hierarchy.
V1_CONTROLLERS = (
    "cpuset",
    "devices",
    "memory",
    "cpu",
    "cpuacct",
    "pids",
    "blkio",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "freezer",
    "rdma",
    "misc",
    "name=systemd",
)


# Host and V1Mount are plain classes, not NamedTuples: creating a NamedTuple class costs about
# a millisecond at import, and every runtime invocation imports this module.


class Host:
    """Where the cgroup root, mountinfo, /proc/self/cgroup and systemd's marker live."""

    __slots__ = ("mountinfo", "root", "self_cgroup", "systemd_dir")

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        mountinfo: str = "/proc/self/mountinfo",
        self_cgroup: str = "/proc/self/cgroup",
        systemd_dir: str = "/run/systemd/system",
    ) -> None:
        self.root = root
        self.mountinfo = mountinfo
        self.self_cgroup = self_cgroup
        self.systemd_dir = systemd_dir

    def _key(self) -> tuple[str, str, str, str]:
        return (self.root, self.mountinfo, self.self_cgroup, self.systemd_dir)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Host) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Host(root={self.root!r}, mountinfo={self.mountinfo!r}, "
            f"self_cgroup={self.self_cgroup!r}, systemd_dir={self.systemd_dir!r})"
        )


class V1Mount:
    """One v1 hierarchy mount; co-mounted controllers share one instance."""

    __slots__ = ("controllers", "mountpoint", "root")

    def __init__(self, mountpoint: str, root: str, controllers: tuple[str, ...]) -> None:
        self.mountpoint = mountpoint
        #: the cgroup that the mount shows at its mountpoint ("/" unless in a cgroup namespace)
        self.root = root
        self.controllers = controllers

    def _key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.mountpoint, self.root, self.controllers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, V1Mount) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"V1Mount(mountpoint={self.mountpoint!r}, root={self.root!r}, "
            f"controllers={self.controllers!r})"
        )


def detect_mode(root: str = DEFAULT_ROOT) -> Mode:
    """v2 when root is a cgroup2 mount, hybrid when root/unified is, else v1.

    A cgroup2 directory always has cgroup.controllers, which no v1 hierarchy or tmpfs has; that
    is cheaper than statfs and also holds on a fake cgroupfs.
    """
    if fsutil.exists(posixpath.join(root, "cgroup.controllers")):
        return "v2"
    if fsutil.exists(posixpath.join(root, "unified", "cgroup.controllers")):
        return "hybrid"
    return "v1"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def v1_mounts(host: Host) -> dict[str, V1Mount]:
    """Controller name -> its v1 hierarchy mount under host.root (first mount wins)."""
    out: dict[str, V1Mount] = {}
    prefix = host.root.rstrip("/") + "/"
    for line in fsutil.read(host.mountinfo).splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) < sep + 4 or fields[sep + 1] != "cgroup":
            continue
        mountpoint = _unescape(fields[4])
        if not mountpoint.startswith(prefix):
            continue
        opts = fields[sep + 3].split(",")
        controllers = tuple(o for o in opts if o in V1_CONTROLLERS)
        if not controllers:
            continue
        mnt = V1Mount(mountpoint, _unescape(fields[3]), controllers)
        for c in controllers:
            out.setdefault(c, mnt)
    return out


def own_cgroups(host: Host) -> dict[str, str]:
    """Controller -> the cgroup this process is in ("" is the v2 / unified entry)."""
    out: dict[str, str] = {}
    for line in fsutil.read(host.self_cgroup).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
            continue
        for c in ctrls.split(","):
            out[c] = path
    return out


def in_mount(mnt: V1Mount, cgroup: str) -> str:
    """The directory of cgroup (as /proc/self/cgroup names it) inside the mount."""
    rel = posixpath.relpath(cgroup, mnt.root)
    if rel == ".":
        return mnt.mountpoint
    if rel.startswith(".."):
        # The mount shows a subtree that does not hold our cgroup (a foreign cgroup namespace):
        # reading the name from the mount's top is the only place it can be.
        rel = cgroup.lstrip("/")
    return posixpath.join(mnt.mountpoint, rel)


def systemd_running(host: Host) -> bool:
    return os.path.isdir(host.systemd_dir)
