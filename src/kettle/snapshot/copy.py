"""The copying fallback: layer directories (overlayfs form) merged into one plain directory.

Used where overlayfs cannot be mounted.  Applying a layer follows overlayfs's rules exactly: a
0/0 character device removes what is below, an opaque directory hides the directory below, a
directory merges into a directory and replaces anything else.  Every operation is relative to
directory fds and follows no symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from kettle.snapshot import fsat

_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(fd: int) -> bool:
    for prefix in _OVERLAY_XATTRS:
        try:
            if os.getxattr(fd, prefix + "opaque") == b"y":
                return True
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return False


def _copy_xattrs(src: int | str, dst: int | str, follow: bool = True) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno == errno.ENOTSUP:
            return
        raise
    for name in names:
        if name.startswith(_OVERLAY_XATTRS):
            continue
        os.setxattr(
            dst, name, os.getxattr(src, name, follow_symlinks=follow), follow_symlinks=follow
        )


def _attrs_fd(fd: int, st: os.stat_result, rootless: bool) -> None:
    if not rootless:
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))


class _Merger:
    def __init__(self, rootless: bool, root_fd: int) -> None:
        self.rootless = rootless
        self.root_fd = root_fd
        self.links: dict[tuple[int, int], tuple[str, ...]] = {}

    def apply(self, src_fd: int, dst_fd: int, rel: tuple[str, ...] = ()) -> None:
        """Merge the directory src_fd into dst_fd."""
        dir_times: list[tuple[int, str, os.stat_result]] = []
        with os.scandir(src_fd) as it:
            entries = list(it)
        for entry in entries:
            name = entry.name
            st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
            try:
                dst = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
            except FileNotFoundError:
                dst = None
            if _is_whiteout(st):
                if dst is not None:
                    fsat.remove_entry(dst_fd, name)
                continue
            if stat.S_ISDIR(st.st_mode):
                if dst is not None and not stat.S_ISDIR(dst.st_mode):
                    fsat.remove_entry(dst_fd, name)
                    dst = None
                if dst is None:
                    os.mkdir(name, 0o700, dir_fd=dst_fd)
                sfd = os.open(name, fsat.O_DIR, dir_fd=src_fd)
                dfd = os.open(name, fsat.O_DIR, dir_fd=dst_fd)
                try:
                    if dst is not None and _is_opaque(sfd):
                        fsat.clear_dir(dfd)
                    self.apply(sfd, dfd, (*rel, name))
                    _attrs_fd(dfd, st, self.rootless)
                    _copy_xattrs(sfd, dfd)
                finally:
                    os.close(sfd)
                    os.close(dfd)
                dir_times.append((dst_fd, name, st))
                continue
            if dst is not None:
                fsat.remove_entry(dst_fd, name)
            self._copy_leaf(src_fd, dst_fd, name, st, (*rel, name))
        for fd, name, st in dir_times:
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)

    def _copy_leaf(
        self, src_fd: int, dst_fd: int, name: str, st: os.stat_result, rel: tuple[str, ...]
    ) -> None:
        mode = st.st_mode
        if st.st_nlink > 1 and not stat.S_ISDIR(mode):
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None and self._link(first, dst_fd, name):
                return
        if stat.S_ISREG(mode):
            sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                dfd = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dst_fd,
                )
                try:
                    _copy_data(sfd, dfd, st.st_size)
                    _attrs_fd(dfd, st, self.rootless)
                    _copy_xattrs(sfd, dfd)
                    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
            if not self.rootless:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
            os.utime(
                name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_fd, follow_symlinks=False
            )
        else:
            os.mknod(name, (mode & ~0o7777) | 0o600, st.st_rdev, dir_fd=dst_fd)
            if not self.rootless:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_fd, follow_symlinks=False)
            os.utime(
                name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_fd, follow_symlinks=False
            )
        if st.st_nlink > 1:
            self.links[(st.st_dev, st.st_ino)] = rel

    def _link(self, first: tuple[str, ...], dst_fd: int, name: str) -> bool:
        try:
            pfd = fsat.open_dir(self.root_fd, first[:-1])
        except (OSError, fsat.SymlinkInPath, fsat.NotADirectoryInPath):
            return False  # the first copy was replaced since: copy this one on its own
        try:
            os.link(first[-1], name, src_dir_fd=pfd, dst_dir_fd=dst_fd, follow_symlinks=False)
            return True
        except OSError:
            return False
        finally:
            os.close(pfd)


def _copy_data(src: int, dst: int, size: int) -> None:
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(src, dst, size - done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = os.sendfile(dst, src, None, size - done)
        if n == 0:
            break
        done += n


def merge_layers(layer_dirs: Sequence[str], target: str, rootless: bool | None = None) -> None:
    """Apply layer directories, lowest first, onto the directory target."""
    if rootless is None:
        rootless = os.geteuid() != 0
    dst = os.open(target, fsat.O_DIR)
    merger = _Merger(rootless, dst)
    try:
        for layer in layer_dirs:
            # Hardlinks pair up within one layer only (inodes of two layers are unrelated).
            merger.links = {}
            src = os.open(layer, fsat.O_DIR)
            try:
                merger.apply(src, dst)
                st = os.fstat(src)
                _attrs_fd(dst, st, rootless)
            finally:
                os.close(src)
    finally:
        os.close(dst)
