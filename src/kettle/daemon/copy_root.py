"""A container's "/" as one directory fd, for kctl cp, whether it runs or not.

* Running (or paused): the init's root, /proc/<pid>/root, which also shows its volumes and
  mounts.  rec.pid may be stale (the init exited and the pid went to another process, maybe
  one whose root is the host's "/"), so after opening it we check that the process we opened
  is still alive (its pidfd) and that its root is the container's rootfs (the same inode as the
  shim's mount on <bundle>/rootfs).
* Created or exited: nothing is mounted.  A thread of our own unshares its mount namespace
  (per thread: CLONE_NEWNS takes a copy of the thread's fs_struct, never the process's), makes
  it a slave so nothing propagates back to the host, mounts the snapshot (the bundle's
  rootfs.json) with nodev,nosuid on <bundle>/rootfs there, binds the spec's bind mounts (the
  container's volumes) onto it, and holds the namespace until the copy is done.  Nothing is
  ever mounted in kettled's namespace, so a kettled that dies mid-copy leaks no mount: the
  namespace goes with its thread.  The container's lock is held meanwhile, so it cannot be
  started (or removed) under the copy.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kettle import syscalls as sc
from kettle.daemon.copy_tar import IdMapper
from kettle.daemon.store import PAUSED, RUNNING
from kettle.errors import FailedPrecondition, InvalidArgument, SyscallError
from kettle.runtime import safepath

if TYPE_CHECKING:
    from kettle.daemon.containers import Containers
    from kettle.daemon.store import Record
    from kettle.proto.mount_pb import Mount

#: what the kernel maps ids without a mapping to.
_OVERFLOW_ID = 65534
_MOUNT_WAIT_S = 60.0


@dataclass
class ContainerRoot:
    rec: Record
    #: O_PATH directory fd of the container's "/"
    fd: int
    running: bool
    #: the container's root filesystem is read-only (root.readonly in its spec)
    readonly: bool
    #: container ids -> host ids, and back
    to_host: IdMapper
    to_container: IdMapper

    @property
    def root_owner(self) -> tuple[int, int]:
        """The host ids of the container's root user."""
        return self.to_host(0, 0)


def _map_one(maps: list[dict[str, Any]], value: int, reverse: bool) -> int:
    for m in maps:
        inside, outside, size = int(m["containerID"]), int(m["hostID"]), int(m["size"])
        src, dst = (outside, inside) if reverse else (inside, outside)
        if src <= value < src + size:
            return dst + value - src
    return _OVERFLOW_ID


def id_mappers(spec: dict[str, Any]) -> tuple[IdMapper, IdMapper]:
    """(to_host, to_container) from a spec's linux.uidMappings/gidMappings (identity without)."""
    linux = spec.get("linux") or {}
    uids = list(linux.get("uidMappings") or [])
    gids = list(linux.get("gidMappings") or [])
    if not uids and not gids:

        def same(uid: int, gid: int) -> tuple[int, int]:
            return uid, gid

        return same, same

    def to_host(uid: int, gid: int) -> tuple[int, int]:
        return _map_one(uids, uid, False), _map_one(gids, gid, False)

    def to_container(uid: int, gid: int) -> tuple[int, int]:
        return _map_one(uids, uid, True), _map_one(gids, gid, True)

    return to_host, to_container


@contextmanager
def open_root(containers: Containers, ref: str) -> Iterator[ContainerRoot]:
    """The root of container `ref`, held until the block ends (NotFound: no such container)."""
    rec = containers.store.find(ref)
    lock = containers._lock(rec.id)
    lock.acquire()
    held = True
    private: _PrivateRoot | None = None
    fd = -1
    try:
        rec = containers.store.find(rec.id)
        spec = json.loads(rec.spec or "{}")
        to_host, to_container = id_mappers(spec)
        rootfs = os.path.join(containers.bundle(rec.id), "rootfs")
        running = rec.status in (RUNNING, PAUSED) and rec.pid > 0
        if running:
            fd = _running_root(rec, rootfs)
            # A running container is not held still: stop and kill must not wait for a copy.
            lock.release()
            held = False
        else:
            if os.path.ismount(rootfs):
                # Its shim has not unmounted it yet: it is stopping right now.
                raise FailedPrecondition(f"container {rec.id} is stopping; try again")
            private = _PrivateRoot(containers._rootfs(rec.id), rootfs, _binds(spec))
            fd = private.open()
        readonly = bool((spec.get("root") or {}).get("readonly"))
        yield ContainerRoot(rec, fd, running, readonly, to_host, to_container)
    finally:
        if fd >= 0:
            os.close(fd)
        if private is not None:
            private.close()
        if held:
            lock.release()


def _running_root(rec: Record, rootfs: str) -> int:
    gone = FailedPrecondition(f"container {rec.id} stopped while its files were being opened")
    try:
        pidfd = sc.pidfd_open(rec.pid)
    except SyscallError as e:
        if e.errno == errno.ESRCH:
            raise gone from None
        raise
    try:
        try:
            fd = os.open(f"/proc/{rec.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise gone from None
        try:
            # Alive now means alive when /proc/<pid>/root was opened: the pid was not reused
            # in between, so fd is the root of the process the pidfd names...
            try:
                sc.pidfd_send_signal(pidfd, 0)
            except SyscallError as e:
                if e.errno == errno.ESRCH:
                    raise gone from None
                raise
            # ...and that process is the container's if its root is the container's rootfs.
            got = os.fstat(fd)
            want = os.stat(rootfs)
            if (got.st_dev, got.st_ino) != (want.st_dev, want.st_ino):
                raise gone
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(pidfd)
    return fd


def _binds(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's bind mounts (volumes and -v binds), in order."""
    out = []
    for m in spec.get("mounts") or []:
        opts = list(m.get("options") or [])
        if m.get("type") in ("bind", "none", "", None) and ("bind" in opts or "rbind" in opts):
            out.append(m)
    return out


class _PrivateRoot:
    """The snapshot mounted in a mount namespace of one thread's own (see the module)."""

    def __init__(self, mounts: list[Mount], target: str, binds: list[dict[str, Any]]) -> None:
        from kettle.proto.mount_pb import Mount

        # nodev: a device node a container made is never a way into the host's devices,
        # whatever reads it; nosuid for the same reason.
        self.mounts = [
            Mount(type=m.type, source=m.source, options=[*m.options, "nodev", "nosuid"])
            for m in mounts
        ]
        self.target = target
        self.binds = binds
        self.fd = -1
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="cp-mount", daemon=True)

    def open(self) -> int:
        self._thread.start()
        if not self._ready.wait(_MOUNT_WAIT_S):
            self.close()
            raise FailedPrecondition(f"mounting {self.target}: timed out")
        if self.error is not None:
            self.close()
            raise self.error
        return os.dup(self.fd)

    def close(self) -> None:
        self._release.set()
        if self._thread.is_alive():
            # Bounded: a mount stuck in the kernel must not hold an RPC thread forever (the
            # namespace goes whenever the thread does).
            self._thread.join(_MOUNT_WAIT_S)

    def _hold(self) -> None:
        try:
            self._mount()
        except BaseException as e:
            self.error = e
        finally:
            self._ready.set()
        try:
            self._release.wait()
        finally:
            if self.fd >= 0:
                os.close(self.fd)
        # The thread ends here and its mount namespace with it: the kernel unmounts everything.

    def _mount(self) -> None:
        from kettle.shim.rootfs import mount_all

        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
        mount_all(self.mounts, self.target)
        self.fd = os.open(self.target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        for i, m in enumerate(self.binds):
            self._bind(i, m)

    def _bind(self, i: int, m: dict[str, Any]) -> None:
        dest, source = str(m.get("destination") or ""), str(m.get("source") or "")
        if not dest.startswith("/") or not source:
            raise InvalidArgument(f"mounts[{i}]: a bind mount needs a source and an absolute path")
        opts = list(m.get("options") or [])
        src = os.open(source, os.O_PATH | os.O_CLOEXEC)  # the spec's author chose the source
        try:
            if os.path.isdir(safepath.proc_fd(src)):
                dst = safepath.mkdir_all_in_root(self.fd, dest)
            else:
                dst = safepath.create_file_in_root(self.fd, dest)
            try:
                flags = sc.MS_BIND | (sc.MS_REC if "rbind" in opts else 0)
                sc.mount(safepath.proc_fd(src), safepath.proc_fd(dst), None, flags)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        if "ro" in opts:
            # The fd of the destination still names the covered directory: open it again.
            top = safepath.open_in_root(self.fd, dest, os.O_PATH)
            try:
                sc.mount(
                    None,
                    safepath.proc_fd(top),
                    None,
                    sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY,
                )
            finally:
                os.close(top)
