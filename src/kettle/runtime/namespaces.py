"""Namespaces of the OCI spec: which to create, which to join by path, and in what order."""

from __future__ import annotations

import os

from kettle import syscalls as sc
from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# spec type -> (clone flag, name under /proc/<pid>/ns)
KINDS: dict[str, tuple[int, str]] = {
    "pid": (sc.CLONE_NEWPID, "pid"),
    "network": (sc.CLONE_NEWNET, "net"),
    "mount": (sc.CLONE_NEWNS, "mnt"),
    "ipc": (sc.CLONE_NEWIPC, "ipc"),
    "uts": (sc.CLONE_NEWUTS, "uts"),
    "user": (sc.CLONE_NEWUSER, "user"),
    "cgroup": (sc.CLONE_NEWCGROUP, "cgroup"),
    "time": (sc.CLONE_NEWTIME, "time"),
}

# Joining order: the user namespace first (it grants the rights for the others), the mount
# namespace last but one so earlier setns calls still see the host's /proc, and pid and time
# last since they only take effect for children.
JOIN_ORDER = ("user", "ipc", "uts", "network", "cgroup", "mount", "pid", "time")


class Plan:
    __slots__ = ("join", "new")

    def __init__(self, new: frozenset[str], join: tuple[tuple[str, str], ...]) -> None:
        self.new = new
        self.join = join  # (type, path) in JOIN_ORDER

    @property
    def unshare_flags(self) -> int:
        """Flags for the one unshare after the user namespace (cgroup comes later)."""
        flags = 0
        for kind in self.new:
            if kind not in ("user", "cgroup"):
                flags |= KINDS[kind][0]
        return flags

    def has(self, kind: str) -> bool:
        return kind in self.new or any(k == kind for k, _ in self.join)


def plan(namespaces: Sequence[Mapping[str, Any]] | None) -> Plan:
    new: set[str] = set()
    join: dict[str, str] = {}
    for i, ns in enumerate(namespaces or ()):
        kind = ns.get("type")
        if kind not in KINDS:
            raise InvalidArgument(f"linux.namespaces[{i}].type: unknown namespace {kind!r}")
        if kind in new or kind in join:
            raise InvalidArgument(f"linux.namespaces[{i}]: duplicate namespace {kind}")
        path = ns.get("path")
        if path:
            if not os.path.isabs(path):
                raise InvalidArgument(f"linux.namespaces[{i}].path: must be absolute: {path}")
            join[kind] = path
        else:
            new.add(kind)
    ordered = tuple((k, join[k]) for k in JOIN_ORDER if k in join)
    return Plan(frozenset(new), ordered)


def open_joins(p: Plan) -> list[tuple[str, int, str]]:
    """Open every namespace to join before any setns (paths stop resolving after mnt)."""
    out: list[tuple[str, int, str]] = []
    try:
        for kind, path in p.join:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            out.append((kind, fd, path))
    except FileNotFoundError as e:
        for _, fd, _ in out:
            os.close(fd)
        raise InvalidArgument(f"namespace path {e.filename} does not exist") from None
    return out


def join_all(opened: list[tuple[str, int, str]]) -> None:
    for kind, fd, path in opened:
        sc.setns(fd, KINDS[kind][0], path)
        os.close(fd)


def self_ns_inode(kind: str, pid: int | str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/{KINDS[kind][1]}").st_ino
