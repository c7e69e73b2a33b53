"""linux.cgroupsPath: cleaning and the choice between absolute and relative (runc 1.1 rules).

- absolute ("/a/b"): relative to the cgroup root of each hierarchy;
- relative ("a/b"): relative to the runtime's own cgroup (v1 and the hybrid unified
  hierarchy), or to the parent of its own cgroup (pure v2: its own cgroup usually holds
  processes, so it cannot have controllers enabled for children);
- empty or absent: the container id, as a relative path (runc: ``Name = id``, ``Path = ""``).
"""

from __future__ import annotations

import posixpath

from kettle.errors import InvalidArgument


def clean_path(path: str) -> str:
    """runc's CleanPath: lexically clean, and never climb above "/" even when relative."""
    if not path:
        return ""
    if posixpath.isabs(path):
        return posixpath.normpath(path).replace("//", "/")
    cleaned = posixpath.normpath("/" + path)
    return posixpath.relpath(cleaned, "/")


def resolve(cgroups_path: str | None, container_id: str) -> str:
    """The cleaned inner path: absolute ("/a/b") or relative ("a/b")."""
    if cgroups_path:
        inner = clean_path(cgroups_path)
        if inner in ("", ".", "/"):
            raise InvalidArgument(
                f"linux.cgroupsPath {cgroups_path!r}: must name a cgroup below the root"
            )
        return inner
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise InvalidArgument(f"container id {container_id!r} cannot name a cgroup")
    return container_id


def parse_systemd(cgroups_path: str | None, container_id: str) -> tuple[str, str, str]:
    """(slice, prefix, name) from "slice:prefix:name" (runc's defaults when empty)."""
    if not cgroups_path:
        return "system.slice", "runc", container_id
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise InvalidArgument(
            f"linux.cgroupsPath {cgroups_path!r}: expected slice:prefix:name "
            "for the systemd cgroup driver"
        )
    return parts[0], parts[1], parts[2]
