"""Noticing the OOM killer in a container's cgroup, for `/tasks/oom`.

- cgroup v1 (and hybrid hosts, whose memory controller is v1): an eventfd registered on
  ``memory.oom_control`` through ``cgroup.event_control``.  The kernel also signals it when the
  cgroup is removed, so an event only counts while the cgroup still exists.
- cgroup v2: ``memory.events`` raises POLLPRI when it changes; an event counts when its
  ``oom_kill`` counter went up.

The cgroup is found from the init's /proc/<pid>/cgroup, so this works whichever runtime made
the container.  Descriptors are watched on the shim's IO loop: no thread per container.
"""

from __future__ import annotations

import os
import posixpath

from kettle.errors import KettleError
from kettle.shim import log
from kettle.shim.ioloop import IN, PRI, IoLoop

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def memory_cgroup(pid: int, root: str = "/sys/fs/cgroup") -> tuple[str, str] | None:
    """("v1"|"v2", directory) of pid's memory cgroup, or None when it has none."""
    from kettle.cgroups import host as hostmod

    h = hostmod.Host(root=root, self_cgroup=f"/proc/{pid}/cgroup")
    mode = hostmod.detect_mode(root)
    own = hostmod.own_cgroups(h)
    if mode == "v2":
        if "" not in own:
            return None
        d = posixpath.join(root, own[""].lstrip("/"))
        return ("v2", d) if os.path.exists(posixpath.join(d, "memory.events")) else None
    mnt = hostmod.v1_mounts(h).get("memory")
    if mnt is None or "memory" not in own:
        return None
    return "v1", hostmod.in_mount(mnt, own["memory"])


def parse_keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


class _Watch:
    __slots__ = ("container_id", "dir", "event_fd", "file_fd", "kills", "kind")

    def __init__(self, container_id: str, kind: str, d: str) -> None:
        self.container_id = container_id
        self.kind = kind
        self.dir = d
        self.event_fd = -1
        self.file_fd = -1
        self.kills = 0

    def close(self) -> None:
        for fd in (self.event_fd, self.file_fd):
            if fd >= 0:
                os.close(fd)
        self.event_fd = self.file_fd = -1


class OomWatcher:
    def __init__(
        self, loop: IoLoop, on_oom: Callable[[str], None], cgroup_root: str = "/sys/fs/cgroup"
    ) -> None:
        self.loop = loop
        self.on_oom = on_oom
        self.cgroup_root = cgroup_root
        self._watches: dict[str, _Watch] = {}

    def watch(self, container_id: str, pid: int) -> bool:
        """Start watching the memory cgroup of pid; False when there is none to watch."""
        self.unwatch(container_id)
        try:
            found = memory_cgroup(pid, self.cgroup_root)
        except (OSError, KettleError) as e:
            log.warning(f"oom: cgroup of container {container_id} (pid {pid}): {e}")
            return False
        if found is None:
            log.info(f"oom: container {container_id} has no memory cgroup to watch")
            return False
        kind, d = found
        w = _Watch(container_id, kind, d)
        try:
            if kind == "v1":
                self._register_v1(w)
            else:
                self._register_v2(w)
        except OSError as e:
            w.close()
            log.warning(f"oom: cannot watch {d}: {(e.strerror or str(e)).lower()}")
            return False
        self._watches[container_id] = w
        return True

    def _register_v1(self, w: _Watch) -> None:
        w.file_fd = os.open(posixpath.join(w.dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        w.event_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.open(posixpath.join(w.dir, "cgroup.event_control"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(control, f"{w.event_fd} {w.file_fd}".encode())
        finally:
            os.close(control)
        self.loop.add(w.event_fd, IN, lambda _ev: self._v1_event(w))

    def _register_v2(self, w: _Watch) -> None:
        w.file_fd = os.open(posixpath.join(w.dir, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        w.kills = parse_keyed(os.pread(w.file_fd, 4096, 0).decode()).get("oom_kill", 0)
        self.loop.add(w.file_fd, PRI, lambda _ev: self._v2_event(w))

    def _v1_event(self, w: _Watch) -> None:
        try:
            os.eventfd_read(w.event_fd)
        except BlockingIOError:
            return
        if not os.path.exists(posixpath.join(w.dir, "memory.oom_control")):
            self._drop(w)  # the cgroup was removed: that is what woke us
            return
        self.on_oom(w.container_id)

    def _v2_event(self, w: _Watch) -> None:
        try:
            text = os.pread(w.file_fd, 4096, 0).decode()
        except OSError:
            self._drop(w)  # the cgroup is gone
            return
        kills = parse_keyed(text).get("oom_kill", 0)
        if kills > w.kills:
            w.kills = kills
            self.on_oom(w.container_id)

    def _drop(self, w: _Watch) -> None:
        fd = w.event_fd if w.kind == "v1" else w.file_fd
        self.loop.remove(fd)
        w.close()
        if self._watches.get(w.container_id) is w:
            del self._watches[w.container_id]

    def unwatch(self, container_id: str) -> None:
        w = self._watches.pop(container_id, None)
        if w is not None:
            # Closed on the loop thread, so no callback of its can run on a reused fd number.
            self.loop.call_soon(lambda: self._drop(w))
