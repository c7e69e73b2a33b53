"""The container's root filesystem: spec mounts, /dev, pivot_root, masked and read-only paths.

Runs in the container's init, already inside its new mount namespace (and maybe a user
namespace in which it is root), in runc's order::

    prepare()       "/" rslave, rootfs bound onto itself, the spec's mounts, /dev
    bind_console()  when there is a terminal
    (createContainer hooks)
    finalize()      pivot_root, ro tmpfs, ro root, readonlyPaths, maskedPaths, rootfsPropagation

Until the pivot, every path inside the rootfs is resolved fd first (:mod:`safepath`): an
image's symlinks cannot send a mount outside the rootfs, and each mount goes onto
/proc/self/fd/N of the directory or file that was resolved.  After the pivot the container's
"/" is the rootfs, so plain paths can no longer leave it.

The caller must have put the process into the container's cgroup before prepare() (a cgroup
mount without a cgroup namespace binds the directories that /proc/self/cgroup names), and
relative bind sources are taken from the working directory (the bundle, as with runc).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping

from kettle import syscalls as sc
from kettle.errors import FailedPrecondition, Internal, SyscallError
from kettle.runtime import devices, mounts
from kettle.runtime.mounts import Mount, MountInfo
from kettle.runtime.safepath import (
    create_file_in_root,
    fd_path,
    mkdir_all_in_root,
    open_in_root,
    proc_fd,
)

# Not typing.TYPE_CHECKING, no dataclasses and no contextlib: the container's init imports this
# module on every create, and those cost milliseconds to import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Final

#: what runc gives the tmpfs under a v1 cgroup mount and its cgroup filesystems
_CGROUP_FLAGS: Final = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
_RSLAVE: Final = sc.MS_SLAVE | sc.MS_REC
_RPRIVATE: Final = sc.MS_PRIVATE | sc.MS_REC


class _Ctx:
    __slots__ = ("_mountinfo", "cgroupns", "new_netns", "root_fd", "rootfs", "rootless", "userns")

    def __init__(
        self,
        rootfs: str,
        root_fd: int,
        userns: bool,
        rootless: bool,
        cgroupns: bool,
        new_netns: bool,
    ) -> None:
        self.rootfs = rootfs
        self.root_fd = root_fd
        self.userns = userns
        self.rootless = rootless
        self.cgroupns = cgroupns
        self.new_netns = new_netns
        self._mountinfo: list[MountInfo] | None = None

    def shown(self, dest: str) -> str:
        return self.rootfs + dest

    def mountinfo(self) -> list[MountInfo]:
        if self._mountinfo is None:
            self._mountinfo = read_mountinfo()
        return self._mountinfo


def read_mountinfo() -> list[MountInfo]:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            return mounts.parse_mountinfo(f.read())
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, "/proc/self/mountinfo") from None


def _kettle_error(call: str, e: OSError) -> SyscallError:
    """An OSError of a stdlib call (fstat, chdir, ...) leaves as kettle's SyscallError."""
    path = e.filename if isinstance(e.filename, str) else None
    return SyscallError(call, e.errno or errno.EIO, path)


def _open_root(rootfs: str) -> int:
    try:
        return os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, rootfs, "root.path") from None


def _namespaces(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = (spec.get("linux") or {}).get("namespaces") or []
    return [ns for ns in raw if isinstance(ns, Mapping)]


# --- prepare ---------------------------------------------------------------------------------


def prepare(
    spec: Mapping[str, Any],
    rootfs: str,
    *,
    userns: bool,
    rootless: bool,
    before_cgroup: Callable[[], None] | None = None,
) -> None:
    """Mount everything the spec asks for under rootfs, and fill /dev when the spec mounts it.

    userns: the process is in a user namespace (no mknod; host mounts' flags are locked).
    rootless: not root on the host (devices are bound from the host, like userns).
    before_cgroup: called once, right before the first cgroup mount (or at the end when there
    is none): the runtime joins the container's cgroup meanwhile, which costs the kernel an
    RCU grace period, so the mounts before it overlap that wait.
    """
    try:
        _prepare(spec, os.path.realpath(rootfs), userns, rootless, before_cgroup)
    except OSError as e:
        raise _kettle_error("prepare", e) from None


def _prepare(
    spec: Mapping[str, Any],
    rootfs: str,
    userns: bool,
    rootless: bool,
    before_cgroup: Callable[[], None] | None = None,
) -> None:
    linux = spec.get("linux") or {}
    spec_mounts = mounts.parse_mounts(spec)
    spec_devices = devices.parse_devices(linux.get("devices"))
    propagation = mounts.propagation_flag(linux.get("rootfsPropagation"))
    nss = _namespaces(spec)

    # Nothing mounted from now on may propagate back to the host.  finalize() applies the
    # spec's value again to the container's own "/", so an unbindable one (which would stop
    # the rootfs bind below) just waits until then.
    first = propagation if propagation and not propagation & sc.MS_UNBINDABLE else 0
    first = first or _RSLAVE
    sc.mount(None, "/", None, first)
    if first not in (_RSLAVE, _RPRIVATE):
        # After a recursive slave or private change nothing below "/" is shared any more (the
        # kernel turns every shared mount into a slave or private one): reading and parsing
        # mountinfo to find a shared parent is needed only after the other values.
        _make_parent_private(rootfs)
    # pivot_root needs the new root to be a mount point; the bind also holds the mounts below.
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    # Opened after the bind, so that it is the new mount that the spec's mounts go onto.
    root_fd = _open_root(rootfs)
    try:
        ctx = _Ctx(
            rootfs=rootfs,
            root_fd=root_fd,
            userns=userns,
            rootless=rootless,
            cgroupns=any(ns.get("type") == "cgroup" for ns in nss),
            new_netns=any(ns.get("type") == "network" and not ns.get("path") for ns in nss),
        )
        for m in spec_mounts:
            if before_cgroup is not None and m.type in ("cgroup", "cgroup2"):
                before_cgroup()
                before_cgroup = None
            _mount(ctx, m)
        if before_cgroup is not None:
            before_cgroup()
        dev = dev_kind(spec_mounts)
        bind_nodes = userns or rootless
        if dev == "own":
            devices.create_devices(root_fd, devices.with_defaults(spec_devices), bind=bind_nodes)
            devices.dev_links(root_fd)
        elif dev == "none" and spec_devices:
            # No /dev of its own: the image's /dev gets what the spec names (runc does this
            # too), but no defaults.
            devices.create_devices(root_fd, spec_devices, bind=bind_nodes)
        # dev == "bind": the host's /dev (or whatever was bound) already has its nodes
    finally:
        os.close(root_fd)


def dev_kind(spec_mounts: Sequence[Mount]) -> str:
    """Which /dev the spec gives: "own" (a filesystem mounted there), "bind" or "none"."""
    kind = "none"
    for m in spec_mounts:
        if m.destination == "/dev":
            kind = "bind" if m.is_bind else "own"
    return kind


def _make_parent_private(rootfs: str) -> None:
    # pivot_root refuses a new root whose parent mount is shared, and the rootfs bind would
    # otherwise propagate to the parent's peers on the host.
    info = mounts.mount_of(read_mountinfo(), rootfs)
    if info is not None and info.shared:
        sc.mount(None, info.mountpoint, None, sc.MS_PRIVATE)


def _mount(ctx: _Ctx, m: Mount) -> None:
    if m.is_bind:
        _bind(ctx, m)
    elif m.type == "proc":
        _proc_or_sysfs(ctx, m)
    elif m.type == "sysfs":
        _sysfs(ctx, m)
    elif m.type == "cgroup":
        _cgroup(ctx, m)
    elif m.type == "tmpfs":
        _tmpfs(ctx, m)
    else:
        _plain(ctx, m)
    _rec_attrs(ctx, m)


# -- targets --


def _checked(ctx: _Ctx, m: Mount, fd: int, *, fstype: str | None) -> str:
    """The target's path inside the rootfs, after runc's /proc rule; closes fd on failure."""
    try:
        real = fd_path(fd)
        if not mounts.is_within(real, ctx.rootfs):
            raise Internal(f"{m.field}.destination: {m.destination} resolved outside the rootfs")
        rel = real[len(ctx.rootfs.rstrip("/")) :] or "/"
        if rel == "/":
            raise FailedPrecondition(
                f"{m.field}.destination: {m.destination} resolves to the root of the rootfs"
            )
        problem = mounts.proc_mount_problem(rel, fstype, bind=m.is_bind)
        if problem:
            how = "" if rel == m.destination else f"{m.destination} resolves to {rel}; "
            raise FailedPrecondition(f"{m.field}.destination: {how}{problem}")
    except BaseException:
        os.close(fd)
        raise
    return rel


def _dir_target(ctx: _Ctx, m: Mount, *, strict: str | None = None) -> tuple[int, str]:
    """An O_PATH fd of the destination directory (created inside the rootfs) and its path.

    strict names a filesystem (proc, sysfs) that must land on exactly that path: no symlinks.
    """
    try:
        fd = mkdir_all_in_root(ctx.root_fd, m.destination, no_symlinks=strict is not None)
    except SyscallError as e:
        if strict and e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
            raise FailedPrecondition(
                f"{m.field}.destination: {strict} must be mounted on an ordinary directory, "
                f"and {m.destination} in the image is not one"
            ) from None
        raise
    return fd, _checked(ctx, m, fd, fstype=m.type)


def _reopen(ctx: _Ctx, m: Mount, rel: str, flags: int = os.O_PATH) -> int:
    """The destination again, now the root of what was just mounted on it.

    The fd that the mount went onto still names the covered directory, so every later step
    (remount, propagation) needs a fresh one; it must still be the same place.
    """
    fd = open_in_root(ctx.root_fd, rel, flags)
    if fd_path(fd) != ctx.rootfs + rel:
        os.close(fd)
        raise FailedPrecondition(f"{m.field}.destination: {m.destination} changed while mounting")
    return fd


def _do_mount(
    ctx: _Ctx, m: Mount, source: str | None, fd: int, fstype: str | None, flags: int, data: str
) -> None:
    sc.mount(source, proc_fd(fd), fstype, flags, data or None, shown=ctx.shown(m.destination))


def _propagate(ctx: _Ctx, m: Mount, rel: str) -> None:
    if not m.options.propagation:
        return
    fd = _reopen(ctx, m, rel)
    try:
        for flag in m.options.propagation:
            _do_mount(ctx, m, None, fd, None, flag, "")
    finally:
        os.close(fd)


def _rec_attrs(ctx: _Ctx, m: Mount) -> None:
    if not m.options.has_rec_attrs:
        return
    fd = open_in_root(ctx.root_fd, m.destination, os.O_PATH)
    try:
        sc.mount_setattr(
            fd,
            "",
            sc.AT_EMPTY_PATH | sc.AT_RECURSIVE,
            m.options.rec_attr_set,
            m.options.rec_attr_clr,
        )
    finally:
        os.close(fd)


# -- kinds of mounts --


def _plain(ctx: _Ctx, m: Mount) -> None:
    """devpts, mqueue and any other filesystem: a directory, then the mount."""
    fd, rel = _dir_target(ctx, m)
    flags = m.options.flags
    if m.destination == "/dev":
        flags &= ~sc.MS_RDONLY  # nodes go in first; finalize() makes it read-only
    try:
        _do_mount(ctx, m, m.source or m.type, fd, m.type, flags, m.options.data)
    finally:
        os.close(fd)
    _propagate(ctx, m, rel)


def _proc_or_sysfs(ctx: _Ctx, m: Mount) -> None:
    # Exactly where the spec says, never through a symlink: an image with /proc -> /x would
    # otherwise get a proc mount on a path that masks and read-only paths do not cover.
    fd, rel = _dir_target(ctx, m, strict=m.type)
    try:
        _do_mount(ctx, m, m.source or m.type, fd, m.type, m.options.flags, m.options.data)
    finally:
        os.close(fd)
    _propagate(ctx, m, rel)


def _sysfs(ctx: _Ctx, m: Mount) -> None:
    # sysfs may only be mounted by the user namespace that owns the network namespace.
    if ctx.userns and not ctx.new_netns:
        _bind_host_sys(ctx, m)
        return
    try:
        _proc_or_sysfs(ctx, m)
    except SyscallError as e:
        if not (ctx.userns and e.errno in (errno.EPERM, errno.EBUSY)):
            raise
        _bind_host_sys(ctx, m)


def _bind_host_sys(ctx: _Ctx, m: Mount) -> None:
    opts = m.options.replace(flags=m.options.flags | sc.MS_BIND | sc.MS_REC, data="")
    _bind(ctx, Mount(m.index, m.destination, None, "/sys", opts), strict="sysfs")


def _tmpfs(ctx: _Ctx, m: Mount) -> None:
    data = m.options.data
    try:
        fd = open_in_root(ctx.root_fd, m.destination, os.O_PATH)
    except SyscallError as e:
        if e.errno != errno.ENOENT:
            raise
        fd, rel = _dir_target(ctx, m)  # a new directory: tmpfs's own default mode (1777)
    else:
        rel = _checked(ctx, m, fd, fstype="tmpfs")
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            # keep the image's mode for the directory (runc); an explicit mode= comes later
            # in data and wins
            data = f"mode={stat.S_IMODE(st.st_mode):04o}" + (f",{data}" if data else "")
    flags = m.options.flags & ~sc.MS_RDONLY  # filled or chmod-ed first; finalize() makes it ro
    try:
        if m.options.tmpcopyup:
            _tmpfs_copyup(ctx, m, fd, rel, flags, data)
        else:
            _do_mount(ctx, m, m.source or "tmpfs", fd, "tmpfs", flags, data)
    finally:
        os.close(fd)
    _propagate(ctx, m, rel)


def _tmpfs_copyup(ctx: _Ctx, m: Mount, fd: int, rel: str, flags: int, data: str) -> None:
    """A tmpfs that starts with a copy of what the image has at the destination."""
    try:
        # Still the image's directory after the tmpfs covers it: the copy reads from here.
        src = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, ctx.shown(m.destination)) from None
    try:
        _do_mount(ctx, m, m.source or "tmpfs", fd, "tmpfs", flags, data)
        dst = _reopen(ctx, m, rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _copy_tree(src, dst)
            _copy_meta(dst, os.fstat(src))
        except OSError as e:
            raise SyscallError(
                "copy", e.errno or errno.EIO, ctx.shown(m.destination), "tmpcopyup"
            ) from None
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _bind(ctx: _Ctx, m: Mount, *, strict: str | None = None) -> None:
    assert m.source is not None  # parse_mount checked it
    source = m.source if os.path.isabs(m.source) else os.path.join(os.getcwd(), m.source)
    try:
        # The source is the host's (the spec's author chose it): its symlinks are followed.
        src = os.open(source, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, source, f"{m.field}.source") from None
    try:
        is_dir = stat.S_ISDIR(os.fstat(src).st_mode)
        if is_dir:
            fd, rel = _dir_target(ctx, m, strict=strict)
        else:
            fd = create_file_in_root(ctx.root_fd, m.destination)
            rel = _checked(ctx, m, fd, fstype=None)
        try:
            if rel == "/proc" and not _is_proc(ctx, src):
                raise FailedPrecondition(
                    f"{m.field}.destination: /proc cannot be mounted because {source} is not "
                    "of type proc"
                )
            if not m.options.flags & sc.MS_REMOUNT:
                flags = sc.MS_BIND | (m.options.flags & sc.MS_REC)
                try:
                    _do_mount(ctx, m, proc_fd(src), fd, None, flags, "")
                except SyscallError as e:  # name the source, not our /proc/self/fd/N
                    raise SyscallError(
                        "mount", e.errno, ctx.shown(m.destination), f"bind of {source}"
                    ) from None
        finally:
            os.close(fd)
    finally:
        os.close(src)
    if m.options.needs_remount:
        _remount_bind(ctx, m, rel)
    _propagate(ctx, m, rel)


def _remount_bind(ctx: _Ctx, m: Mount, rel: str) -> None:
    """Apply ro, nosuid, ... to a bind mount (a bind ignores them): MS_REMOUNT|MS_BIND."""
    fd = _reopen(ctx, m, rel)
    try:
        flags = m.options.flags | sc.MS_BIND | sc.MS_REMOUNT
        try:
            _do_mount(ctx, m, None, fd, None, flags, "")
        except SyscallError as e:
            if e.errno != errno.EPERM:
                raise
            # In a user namespace the kernel locks the flags a host mount had (nosuid, nodev,
            # noexec, ro, its atime mode): a remount must keep them.
            current = mounts.flags_from_statvfs(os.fstatvfs(fd).f_flag)
            retry = mounts.keep_locked(flags, current, sets_atime=m.options.sets_atime)
            if retry == flags:
                raise
            _do_mount(ctx, m, None, fd, None, retry, "")
    finally:
        os.close(fd)


def _is_proc(ctx: _Ctx, fd: int) -> bool:
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    return any(i.dev == dev and i.fstype == "proc" for i in ctx.mountinfo())


# -- cgroups --


class CgroupDir:
    """One v1 hierarchy as the container sees it under its cgroup mount."""

    __slots__ = ("data", "name", "source")

    def __init__(self, name: str, data: str, source: str) -> None:
        #: the hierarchy's directory name on the host ("cpu,cpuacct", "memory", "systemd")
        self.name = name
        #: its controllers as mount data for a fresh mount ("cpu,cpuacct", "name=systemd")
        self.data = data
        #: the host directory of our own cgroup in it ("" when not asked for)
        self.source = source

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CgroupDir) and (self.name, self.data, self.source) == (
            other.name,
            other.data,
            other.source,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.data, self.source))

    def __repr__(self) -> str:
        return f"CgroupDir(name={self.name!r}, data={self.data!r}, source={self.source!r})"


def v1_layout(
    v1: Mapping[str, Any], own: Mapping[str, str] | None
) -> tuple[list[CgroupDir], list[tuple[str, str]]]:
    """The v1 hierarchies to show and the links for co-mounted ones ("cpu" -> "cpu,cpuacct").

    v1 maps a controller to its kettle.cgroups.host.V1Mount, own a controller to the cgroup
    that /proc/self/cgroup names (None: sources are not needed, as in a cgroup namespace).
    """
    dirs: list[CgroupDir] = []
    links: list[tuple[str, str]] = []
    seen: set[str] = set()
    for mnt in v1.values():
        if mnt.mountpoint in seen:
            continue
        seen.add(mnt.mountpoint)
        name = posixpath.basename(mnt.mountpoint)
        source = ""
        if own is not None:
            path = next((own[c] for c in mnt.controllers if c in own), None)
            if path is None:
                raise FailedPrecondition(
                    f"cgroup hierarchy {mnt.mountpoint}: /proc/self/cgroup names no cgroup in it"
                )
            rel = posixpath.relpath(path, mnt.root)
            if rel == ".." or rel.startswith("../"):
                raise FailedPrecondition(
                    f"cgroup hierarchy {mnt.mountpoint}: our cgroup {path} is not below the "
                    f"mount's root {mnt.root}"
                )
            source = mnt.mountpoint if rel == "." else posixpath.join(mnt.mountpoint, rel)
        dirs.append(CgroupDir(name, ",".join(mnt.controllers), source))
        if "," in name:
            links.extend((part, name) for part in name.split(",") if part)
    return dirs, links


def _cgroup(ctx: _Ctx, m: Mount) -> None:
    from kettle.cgroups import host as cghost

    if cghost.detect_mode() == "v2":
        _cgroup_v2(ctx, m, cghost)
    else:
        _cgroup_v1(ctx, m, cghost)


def _cgroup_v1(ctx: _Ctx, m: Mount, cghost: Any) -> None:
    h = cghost.Host()
    v1 = cghost.v1_mounts(h)
    if not v1:
        raise FailedPrecondition(f"{m.field}: the host has no cgroup v1 hierarchy mounted")
    dirs, links = v1_layout(v1, None if ctx.cgroupns else cghost.own_cgroups(h))
    fd, rel = _dir_target(ctx, m)
    try:
        _do_mount(ctx, m, "tmpfs", fd, "tmpfs", _CGROUP_FLAGS, "mode=755")
    finally:
        os.close(fd)
    _propagate(ctx, m, rel)
    for d in dirs:
        sub = Mount(m.index, f"{rel}/{d.name}", None, d.source or None, m.options)
        if ctx.cgroupns:
            # In our own cgroup namespace a fresh mount shows our cgroup as its root.
            as_cgroup = Mount(sub.index, sub.destination, "cgroup", sub.source, sub.options)
            sub_fd, _ = _dir_target(ctx, as_cgroup)
            try:
                flags = _CGROUP_FLAGS | (m.options.flags & sc.MS_RDONLY)
                _do_mount(ctx, sub, "cgroup", sub_fd, "cgroup", flags, d.data)
            finally:
                os.close(sub_fd)
            _propagate(ctx, sub, sub.destination)
        else:
            opts = m.options.replace(
                flags=m.options.flags | _CGROUP_FLAGS | sc.MS_BIND | sc.MS_REC, data=""
            )
            _bind(ctx, Mount(sub.index, sub.destination, None, sub.source, opts))
    if links:
        dir_fd = open_in_root(ctx.root_fd, rel, os.O_PATH | os.O_DIRECTORY)
        try:
            for name, target in links:
                try:
                    os.symlink(target, name, dir_fd=dir_fd)
                except FileExistsError:
                    pass  # a hierarchy named like the controller itself
                except OSError as e:
                    raise SyscallError(
                        "symlink", e.errno or errno.EIO, ctx.shown(f"{rel}/{name}")
                    ) from None
        finally:
            os.close(dir_fd)
    if m.options.readonly:
        fd = _reopen(ctx, m, rel)
        try:
            flags = sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | _CGROUP_FLAGS
            _do_mount(ctx, m, None, fd, None, flags, "")
        finally:
            os.close(fd)


def _cgroup_v2(ctx: _Ctx, m: Mount, cghost: Any) -> None:
    if ctx.cgroupns:
        fd, rel = _dir_target(ctx, m)
        try:
            source = m.source or "cgroup2"
            _do_mount(ctx, m, source, fd, "cgroup2", m.options.flags, m.options.data)
        finally:
            os.close(fd)
        _propagate(ctx, m, rel)
        return
    # No cgroup namespace: a fresh cgroup2 mount would show the host's whole tree, so the
    # container gets its own cgroup's directory.
    own = cghost.own_cgroups(cghost.Host()).get("")
    if not own:
        raise FailedPrecondition(f"{m.field}: /proc/self/cgroup names no cgroup v2 path")
    source = posixpath.join(cghost.DEFAULT_ROOT, own.lstrip("/"))
    opts = m.options.replace(flags=m.options.flags | sc.MS_BIND, data="")
    try:
        _bind(ctx, Mount(m.index, m.destination, None, source, opts))
    except SyscallError as e:
        if not (ctx.rootless and e.errno in (errno.ENOENT, errno.EPERM, errno.EACCES)):
            raise
        # Rootless without a delegated cgroup: an empty read-only directory, as runc does.
        fd, _ = _dir_target(ctx, m)
        try:
            _do_mount(ctx, m, "tmpfs", fd, "tmpfs", sc.MS_RDONLY | _CGROUP_FLAGS, "")
        finally:
            os.close(fd)


# -- tmpcopyup --


def _copy_meta(fd: int, st: os.stat_result) -> None:
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which drops setuid bits
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_tree(src: int, dst: int) -> None:
    """Copy the directory open at src into the one open at dst (both O_RDONLY fds).

    Contents, owners, modes, times, device nodes and symlinks (as links); hard links stay
    links inside the copy.  Extended attributes are not copied.
    """
    seen: dict[tuple[int, int], str] = {}
    _copy_dir(src, dst, dst, "", seen)


def _copy_dir(
    src: int, dst: int, dst_root: int, rel: str, seen: dict[tuple[int, int], str]
) -> None:
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, dir_flags, dir_fd=src)
            try:
                d = os.open(name, dir_flags, dir_fd=dst)
                try:
                    _copy_dir(s, d, dst_root, f"{rel}{name}/", seen)
                    _copy_meta(d, st)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                os.link(seen[key], name, src_dir_fd=dst_root, dst_dir_fd=dst, follow_symlinks=False)
                continue
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                d = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dst,
                )
                try:
                    while os.sendfile(d, s, None, 1 << 20) > 0:
                        pass
                    _copy_meta(d, st)
                finally:
                    os.close(d)
            finally:
                os.close(s)
            if st.st_nlink > 1:
                seen[key] = rel + name
        else:
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
            else:  # device, fifo, socket
                os.mknod(name, mode, st.st_rdev, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            if not stat.S_ISLNK(mode):
                os.chmod(name, stat.S_IMODE(mode), dir_fd=dst)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)


# --- console ---------------------------------------------------------------------------------


def bind_console(rootfs: str, slave_path: str) -> None:
    """Bind the pty slave onto <rootfs>/dev/console (created, 0666, if missing)."""
    try:
        _bind_console(os.path.realpath(rootfs), slave_path)
    except OSError as e:
        raise _kettle_error("bind_console", e) from None


def _bind_console(rootfs: str, slave_path: str) -> None:
    root_fd = _open_root(rootfs)
    try:
        fd = create_file_in_root(root_fd, "/dev/console", mode=0o666)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise FailedPrecondition(f"{rootfs}/dev/console is a directory")
            sc.mount(slave_path, proc_fd(fd), None, sc.MS_BIND, shown=f"{rootfs}/dev/console")
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


# --- finalize --------------------------------------------------------------------------------


def finalize(
    spec: Mapping[str, Any],
    rootfs: str,
    *,
    no_pivot: bool,
    after_pivot: Callable[[], None] | None = None,
) -> None:
    """Make rootfs "/" and lock it down; the working directory is "/" afterwards.

    after_pivot runs inside the new root before anything is made read-only or masked (runc
    writes sysctls at that point: readonlyPaths usually holds /proc/sys).
    """
    try:
        _finalize(spec, os.path.realpath(rootfs), no_pivot, after_pivot)
    except OSError as e:
        raise _kettle_error("finalize", e) from None


def _finalize(
    spec: Mapping[str, Any],
    rootfs: str,
    no_pivot: bool,
    after_pivot: Callable[[], None] | None,
) -> None:
    linux = spec.get("linux") or {}
    spec_mounts = mounts.parse_mounts(spec)
    propagation = mounts.propagation_flag(linux.get("rootfsPropagation"))
    masked = mounts.masked_paths(spec)
    readonly = mounts.readonly_paths(spec)
    root = spec.get("root") or {}

    if no_pivot:
        _move_root(rootfs)
    else:
        _pivot_root(rootfs)
    if dev_kind(spec_mounts) == "own":
        _reopen_dev_null()
    if after_pivot is not None:
        after_pivot()
    for m in spec_mounts:
        if m.options.readonly and not m.is_bind and (m.type == "tmpfs" or m.destination == "/dev"):
            flags = m.options.flags | sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY
            sc.mount(None, m.destination, None, flags)
    if root.get("readonly"):
        current = mounts.flags_from_statvfs(os.statvfs("/").f_flag)
        sc.mount(None, "/", None, current | sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
    for path in readonly:
        _readonly_path(path)
    for i, path in enumerate(masked):
        _mask_path(path, f"linux.maskedPaths[{i}]")
    if propagation:
        # Now on the container's own "/" (before the pivot it was the host's), and last: the
        # binds of readonlyPaths and maskedPaths fail on an unbindable tree.
        sc.mount(None, "/", None, propagation)
    os.chdir("/")


def _pivot_root(rootfs: str) -> None:
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new)
            # pivot_root(".", "."): the old root ends up stacked under the new one, reachable
            # as our cwd, so no directory for it is needed in the image.
            try:
                sc.pivot_root(".", ".")
            except SyscallError as e:
                raise SyscallError("pivot_root", e.errno, rootfs) from None
        finally:
            os.close(new)
        os.fchdir(old)
        # Slave, not private: unmounting must not propagate to the host, but a private copy
        # could keep host mounts busy that the host expects to be able to unmount.
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, shown="old root")
        sc.umount2(".", sc.MNT_DETACH)
    finally:
        os.close(old)
    os.chdir("/")


def _move_root(rootfs: str) -> None:
    """--no-pivot: move the rootfs onto "/" and chroot (for ramfs roots, where pivot fails)."""
    # The host's full proc and sys mounts would stay reachable beside the chroot (and the
    # kernel counts them when it decides whether a nested proc mount is allowed): drop them.
    for info in read_mountinfo():
        if info.root != "/" or info.fstype not in ("proc", "sysfs"):
            continue
        if mounts.is_within(info.mountpoint, rootfs):
            continue
        try:
            sc.mount(None, info.mountpoint, None, sc.MS_SLAVE | sc.MS_REC)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                continue  # gone with a parent we already detached
            raise
        try:
            sc.umount2(info.mountpoint, sc.MNT_DETACH)
        except SyscallError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            # Not ours to unmount (locked in a user namespace): cover it instead.
            sc.mount("tmpfs", info.mountpoint, "tmpfs", 0)
    os.chdir(rootfs)
    sc.mount(rootfs, "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def _reopen_dev_null() -> None:
    """Stdio that is the host's /dev/null becomes the container's (runc does the same)."""
    try:
        fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, "/dev/null") from None
    try:
        null = os.fstat(fd)
        for i in (0, 1, 2):
            try:
                st = os.fstat(i)
            except OSError:
                continue  # closed stdio is the caller's choice
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev:
                os.dup2(fd, i)
    finally:
        os.close(fd)


def _readonly_path(path: str) -> None:
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return  # runc skips paths the container does not have
        raise
    # Keep nosuid/nodev/noexec and the atime mode of the mount below (locked in a userns).
    current = mounts.flags_from_statvfs(os.statvfs(path).f_flag)
    sc.mount(None, path, None, current | sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)


def _mask_path(path: str, where: str) -> None:
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # runc skips paths the container does not have
    except OSError as e:
        raise SyscallError("stat", e.errno or errno.EIO, path, where) from None
    try:
        sc.mount("/dev/null", path, None, sc.MS_BIND)
    except SyscallError as e:
        if e.errno == errno.ENOTDIR:  # a directory: cover it with an empty read-only tmpfs
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
        elif e.errno == errno.ENOENT:
            raise FailedPrecondition(
                f"{where}: cannot mask {path}: the container has no /dev/null"
            ) from None
        else:
            raise
