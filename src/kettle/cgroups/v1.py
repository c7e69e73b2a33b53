"""The cgroup v1 manager: one directory per mounted hierarchy, plus (hybrid) one in unified.

On a hybrid host the container also joins a same-named cgroup in the unified hierarchy, as
runc does: that gives cgroup.kill and cgroup.events there, and the controllers that sit only
on the unified mount (hugetlb on some hosts).  Limits still go to the v1 controllers.
"""

from __future__ import annotations

import errno
import posixpath

from kettle.cgroups import common, fsutil
from kettle.errors import FailedPrecondition, SyscallError

# Not typing.TYPE_CHECKING: see kettle.cgroups.host.  freezer, signal, resources, setv1 and
# stats are imported by the methods that need them, so that e.g. `delete` does not load the
# resource parser.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Literal

# Which hierarchy answers "which pids are in the container" (any joined one would do).
_PRIMARY = ("pids", "freezer", "memory", "devices", "cpu", "cpuacct", "name=systemd")


class V1Manager:
    def __init__(
        self,
        *,
        mode: Literal["v1", "hybrid"],
        root: str,
        paths: Mapping[str, str],
        mounts: Mapping[str, str],
        unified: str | None = None,
        unified_top: str | None = None,
        created: list[str] | None = None,
        rootless: bool = False,
    ) -> None:
        self.mode: Literal["v1", "hybrid"] = mode
        self.root = root
        #: controller -> the container's directory in that controller's hierarchy
        self.paths = dict(paths)
        #: controller -> mountpoint of its hierarchy
        self.mounts = dict(mounts)
        self.unified = unified
        self.unified_top = unified_top
        #: directories this manager made, parents before children; only these are removed
        self.created = list(created or [])
        self.rootless = rootless

    # --- layout ------------------------------------------------------------------------------

    def _leaves(self) -> list[tuple[str, str]]:
        """(hierarchy top, container dir), one per distinct hierarchy, unified last."""
        seen: dict[str, str] = {}
        for controller, d in self.paths.items():
            seen.setdefault(d, self.mounts[controller])
        out = [(top, d) for d, top in seen.items()]
        if self.unified is not None and self.unified_top is not None:
            out.append((self.unified_top, self.unified))
        return out

    def _primary(self) -> str | None:
        for c in _PRIMARY:
            if c in self.paths:
                return self.paths[c]
        if self.paths:
            return next(iter(self.paths.values()))
        return self.unified

    def dir_for(self, controller: str, what: str) -> str:
        d = self.paths.get(controller)
        if d is None:
            raise FailedPrecondition(f"{what}: cgroup v1 controller {controller} is not mounted")
        return d

    def path(self, controller: str = "") -> str | None:
        """The container's directory for controller ("" = the unified one on hybrid)."""
        if not controller:
            return self.unified
        return self.paths.get(controller)

    # --- lifecycle ---------------------------------------------------------------------------

    def create(self) -> None:
        for top, d in self._leaves():
            made = common.make_path(top, d)
            # Nothing made: d was there before (checked only then, which saves a stat a leaf).
            if not made and d not in self.created and fsutil.isdir(d):
                # runc refuses to put a new container into a cgroup with live processes.
                busy = fsutil.read_pids(posixpath.join(d, "cgroup.procs"))
                if busy:
                    raise FailedPrecondition(
                        f"container's cgroup is not empty: {len(busy)} process(es) found in {d}"
                    )
            for m in made:
                if m not in self.created:
                    self.created.append(m)
            if d == self.paths.get("cpuset"):
                self._cpuset_inherit(top, d)

    def _cpuset_inherit(self, top: str, leaf: str) -> None:
        """A v1 cpuset starts with empty cpus/mems and takes no task until they are filled."""
        cur = top
        for part in posixpath.relpath(leaf, top).split("/"):
            parent, cur = cur, posixpath.join(cur, part)
            if cur not in self.created:
                continue  # not ours to change; an existing cpuset is already usable
            for name in ("cpuset.cpus", "cpuset.mems"):
                mine = posixpath.join(cur, name)
                if not fsutil.read(mine).strip():
                    fsutil.write(mine, fsutil.read(posixpath.join(parent, name)).strip())

    def apply(self, pid: int) -> None:
        for _, d in self._leaves():
            fsutil.write(posixpath.join(d, "cgroup.procs"), str(pid))

    def set(
        self,
        resources: Mapping[str, Any],
        *,
        linux_devices: Any = None,
        default_devices: bool = True,
    ) -> None:
        from kettle.cgroups import resources as resources_mod
        from kettle.cgroups import setv1

        res = resources_mod.parse(resources, linux_devices, default_devices=default_devices)
        setv1.apply(self, res)

    def _freezer(self) -> tuple[str, str] | None:
        if "freezer" in self.paths:
            return "v1", self.paths["freezer"]
        if self.unified is not None and fsutil.exists(
            posixpath.join(self.unified, "cgroup.freeze")
        ):
            return "v2", self.unified
        return None

    def _need_freezer(self) -> tuple[str, str]:
        f = self._freezer()
        if f is None:
            raise FailedPrecondition(
                "cgroup v1 controller freezer is not mounted and there is no cgroup.freeze"
            )
        return f

    def freeze(self) -> None:
        from kettle.cgroups import freezer

        kind, d = self._need_freezer()
        (freezer.v1_freeze if kind == "v1" else freezer.v2_freeze)(d)

    def thaw(self) -> None:
        from kettle.cgroups import freezer

        kind, d = self._need_freezer()
        (freezer.v1_thaw if kind == "v1" else freezer.v2_thaw)(d)

    def is_frozen(self) -> bool:
        f = self._freezer()
        if f is None:
            return False
        from kettle.cgroups import freezer

        kind, d = f
        return (freezer.v1_is_frozen if kind == "v1" else freezer.v2_is_frozen)(d)

    def pids(self) -> list[int]:
        d = self._primary()
        return common.tree_pids(d) if d is not None else []

    def kill_all(self, sig: int) -> None:
        import signal

        if (
            sig == signal.SIGKILL
            and self.unified is not None
            and fsutil.exists(posixpath.join(self.unified, "cgroup.kill"))
        ):
            fsutil.write(posixpath.join(self.unified, "cgroup.kill"), "1")
            return
        # Frozen, the set of processes cannot change (no fork escapes) while we signal it.
        frozen_here = self._freezer() is not None and not self.is_frozen()
        if frozen_here:
            self.freeze()
        try:
            common.signal_pids(self.pids(), sig)
        finally:
            if frozen_here:
                self.thaw()

    def stats(self) -> dict[str, Any]:
        from kettle.cgroups import stats

        return stats.v1(self.paths, self.unified)

    def oom_kill_count(self) -> int:
        d = self.paths.get("memory")
        if d is None:
            return 0
        try:
            return fsutil.read_keyed(posixpath.join(d, "memory.oom_control")).get("oom_kill", 0)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                return 0  # the cgroup is gone: nothing was killed since
            raise

    def destroy(self) -> None:
        leaves = {d for _, d in self._leaves()}
        for d in reversed(self.created):
            if d in leaves:
                common.remove_tree(d)
            else:
                common.remove_if_unused(d)

    def exists(self) -> bool:
        d = self._primary()
        return d is not None and fsutil.isdir(d)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "driver": "cgroupfs",
            "mode": self.mode,
            "root": self.root,
            "paths": dict(self.paths),
            "mounts": dict(self.mounts),
            "unified": self.unified,
            "unified_top": self.unified_top,
            "created": list(self.created),
            "rootless": self.rootless,
        }
