"""Container cgroups: v1, hybrid and v2 hosts behind one interface, chosen at run time.

``new_manager`` resolves linux.cgroupsPath (see :mod:`kettle.cgroups.paths`) and returns a
:class:`V1Manager` (v1 and hybrid hosts), a :class:`V2Manager`, or, for a rootless container
without a usable cgroup, a manager that runs it in the caller's cgroup.  ``to_state`` /
``from_state`` carry a manager between runtime invocations.  docs/cgroups.md has the design.
"""

from __future__ import annotations

import posixpath

from kettle.cgroups.host import DEFAULT_ROOT, Host, detect_mode
from kettle.errors import FailedPrecondition, InvalidArgument, Unimplemented

# Every runtime invocation imports this package, and each needs only part of it: the manager
# classes are imported for the detected mode only (see new_manager/from_state), and typing is
# not imported at all.  Not typing.TYPE_CHECKING, which would import typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from kettle.cgroups.disabled import DisabledManager
    from kettle.cgroups.host import Mode
    from kettle.cgroups.manager import Manager
    from kettle.cgroups.v1 import V1Manager
    from kettle.cgroups.v2 import V2Manager
else:
    from kettle.lazy import attributes

    __getattr__ = attributes(
        __name__,
        {
            "DisabledManager": "kettle.cgroups.disabled",
            "Manager": "kettle.cgroups.manager",
            "Mode": "kettle.cgroups.host",
            "V1Manager": "kettle.cgroups.v1",
            "V2Manager": "kettle.cgroups.v2",
        },
    )


__all__ = [
    "DEFAULT_ROOT",
    "DisabledManager",
    "Host",
    "Manager",
    "Mode",
    "V1Manager",
    "V2Manager",
    "detect_mode",
    "from_state",
    "new_manager",
]


def new_manager(
    cgroups_path: str | None,
    container_id: str,
    *,
    rootless: bool = False,
    systemd: bool = False,
    root: str = DEFAULT_ROOT,
    host: Host | None = None,
) -> Manager:
    """The manager for a new container.  host overrides root (unit tests: a fake cgroupfs)."""
    from kettle.cgroups import fsutil, paths
    from kettle.cgroups import host as hostmod

    h = host or Host(root=root)
    if systemd:
        paths.parse_systemd(cgroups_path, container_id)
        if not hostmod.systemd_running(h):
            raise FailedPrecondition("systemd cgroup driver requested but systemd is not running")
        raise Unimplemented(
            "the systemd cgroup driver is not implemented; use the cgroupfs driver "
            "(drop --systemd-cgroup)"
        )
    mode = detect_mode(h.root)
    inner = paths.resolve(cgroups_path, container_id)
    absolute = posixpath.isabs(inner)
    own = {} if absolute else hostmod.own_cgroups(h)

    if mode == "v2":
        if absolute:
            leaf = posixpath.join(h.root, inner.lstrip("/"))
        else:
            # Our own cgroup holds processes, so its children could not get controllers.
            parent = posixpath.dirname(own.get("", "/")) or "/"
            leaf = posixpath.join(h.root, parent.lstrip("/"), inner)
        if rootless:
            anchor = leaf
            while not fsutil.isdir(anchor) and anchor != h.root:
                anchor = posixpath.dirname(anchor)
            if not fsutil.writable(anchor):
                from kettle.cgroups.disabled import DisabledManager

                return DisabledManager(f"rootless and {anchor} is not writable (no delegation)")
        from kettle.cgroups.v2 import V2Manager

        return V2Manager(root=h.root, path=leaf, rootless=rootless)

    if rootless:
        from kettle.cgroups.disabled import DisabledManager

        return DisabledManager("rootless on a cgroup v1 host, which cannot delegate cgroups")
    mounts = hostmod.v1_mounts(h)
    cg_paths: dict[str, str] = {}
    tops: dict[str, str] = {}
    for controller, mnt in mounts.items():
        if absolute:
            cg_paths[controller] = posixpath.join(mnt.mountpoint, inner.lstrip("/"))
        else:
            base = hostmod.in_mount(mnt, own.get(controller, "/"))
            cg_paths[controller] = posixpath.join(base, inner)
        tops[controller] = mnt.mountpoint
    unified = unified_top = None
    if mode == "hybrid":
        unified_top = posixpath.join(h.root, "unified")
        base = "/" if absolute else own.get("", "/")
        unified = posixpath.join(unified_top, base.lstrip("/"), inner.lstrip("/"))
    if not cg_paths and unified is None:
        raise FailedPrecondition(f"no cgroup hierarchy is mounted under {h.root}")
    from kettle.cgroups.v1 import V1Manager

    return V1Manager(
        mode=mode,
        root=h.root,
        paths=cg_paths,
        mounts=tops,
        unified=unified,
        unified_top=unified_top,
        rootless=rootless,
    )


def from_state(state: Mapping[str, Any], root: str = DEFAULT_ROOT) -> Manager:
    """The manager that to_state() described.  Paths in state are absolute; root is a fallback."""
    mode = state.get("mode")
    base = str(state.get("root") or root)
    created = [str(p) for p in state.get("created") or []]
    rootless = bool(state.get("rootless"))
    if mode == "v2":
        from kettle.cgroups.v2 import V2Manager

        enable = state.get("enable")
        return V2Manager(
            root=base,
            path=str(state["path"]),
            created=created,
            rootless=rootless,
            enable=None if enable is None else [str(c) for c in enable],
        )
    if mode in ("v1", "hybrid"):
        from kettle.cgroups.v1 import V1Manager

        return V1Manager(
            mode="hybrid" if mode == "hybrid" else "v1",
            root=base,
            paths={str(k): str(v) for k, v in (state.get("paths") or {}).items()},
            mounts={str(k): str(v) for k, v in (state.get("mounts") or {}).items()},
            unified=state.get("unified"),
            unified_top=state.get("unified_top"),
            created=created,
            rootless=rootless,
        )
    if mode == "none":
        from kettle.cgroups.disabled import DisabledManager

        return DisabledManager(str(state.get("reason") or "no cgroup"))
    raise InvalidArgument(f"cgroup state: unknown mode {mode!r}")
