"""The cgroup v2 manager: one directory in the unified hierarchy."""

from __future__ import annotations

import errno
import posixpath

from kettle.cgroups import common, fsutil
from kettle.errors import FailedPrecondition, SyscallError

# Not typing.TYPE_CHECKING: see kettle.cgroups.host.  freezer, signal, resources, setv2 and
# stats are imported by the methods that need them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Literal


class V2Manager:
    mode: Literal["v2"] = "v2"

    def __init__(
        self,
        *,
        root: str,
        path: str,
        created: list[str] | None = None,
        rootless: bool = False,
        enable: Sequence[str] | None = None,
    ) -> None:
        self.root = root
        #: the container's cgroup directory
        self.dir = path
        #: directories this manager made, parents before children; only these are removed
        self.created = list(created or [])
        self.rootless = rootless
        #: controllers create() enables in the parents; None: all they offer (runc's choice,
        #: so that stats and later updates find them).  set() still enables what a limit needs.
        self.enable = None if enable is None else list(enable)

    def path(self, controller: str = "") -> str | None:
        """The container's directory (the same for every controller on v2)."""
        return self.dir

    def create(self) -> None:
        d = self.dir
        made = common.make_path(self.root, d)
        # Nothing made: d was there before (checked only then, which saves a stat).
        if not made and d not in self.created and fsutil.isdir(d):
            busy = fsutil.read_pids(posixpath.join(d, "cgroup.procs"))
            if busy:
                raise FailedPrecondition(
                    f"container's cgroup is not empty: {len(busy)} process(es) found in {d}"
                )
        for m in made:
            if m not in self.created:
                self.created.append(m)
        if self.enable is None or self.enable:
            common.enable_controllers(self.root, d, self.enable, strict=False)

    def apply(self, pid: int) -> None:
        fsutil.write(posixpath.join(self.dir, "cgroup.procs"), str(pid))

    def set(
        self,
        resources: Mapping[str, Any],
        *,
        linux_devices: Any = None,
        default_devices: bool = True,
    ) -> None:
        from kettle.cgroups import resources as resources_mod
        from kettle.cgroups import setv2

        res = resources_mod.parse(resources, linux_devices, default_devices=default_devices)
        setv2.apply(self, res)

    def freeze(self) -> None:
        from kettle.cgroups import freezer

        freezer.v2_freeze(self.dir)

    def thaw(self) -> None:
        from kettle.cgroups import freezer

        freezer.v2_thaw(self.dir)

    def is_frozen(self) -> bool:
        from kettle.cgroups import freezer

        try:
            return freezer.v2_is_frozen(self.dir)
        except SyscallError as e:
            if e.errno == errno.ENOENT and fsutil.isdir(self.dir):
                return False  # kernel before 5.2: no cgroup.freeze, so never frozen by us
            raise

    def pids(self) -> list[int]:
        return common.tree_pids(self.dir)

    def kill_all(self, sig: int) -> None:
        import signal

        kill = posixpath.join(self.dir, "cgroup.kill")
        if sig == signal.SIGKILL and fsutil.exists(kill):
            fsutil.write(kill, "1")
            return
        # Frozen, the set of processes cannot change (no fork escapes) while we signal it.
        can_freeze = fsutil.exists(posixpath.join(self.dir, "cgroup.freeze"))
        frozen_here = can_freeze and not self.is_frozen()
        if frozen_here:
            self.freeze()
        try:
            common.signal_pids(self.pids(), sig)
        finally:
            if frozen_here:
                self.thaw()

    def stats(self) -> dict[str, Any]:
        from kettle.cgroups import stats

        return stats.v2(self.dir)

    def oom_kill_count(self) -> int:
        path = posixpath.join(self.dir, "memory.events")
        if not fsutil.exists(path):
            return 0  # no memory controller here: nothing can be OOM-killed by it
        return fsutil.read_keyed(path).get("oom_kill", 0)

    def destroy(self) -> None:
        for d in reversed(self.created):
            if d == self.dir:
                common.remove_tree(d)
            else:
                common.remove_if_unused(d)

    def exists(self) -> bool:
        return fsutil.isdir(self.dir)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "driver": "cgroupfs",
            "mode": "v2",
            "root": self.root,
            "path": self.dir,
            "created": list(self.created),
            "rootless": self.rootless,
            "enable": self.enable,
        }
