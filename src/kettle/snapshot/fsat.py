"""Directory-fd helpers: walking beneath a root without ever following a symlink.

Every path handled here is a list of components relative to a root directory fd.  The kernel
does the walk with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where it can; older kernels
(before 5.6) get a component-by-component walk with O_NOFOLLOW, which is equally strict.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence

from kettle import syscalls
from kettle.errors import SyscallError

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RESOLVE = syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS

_have_openat2: bool | None = None


class SymlinkInPath(Exception):
    """A component of the path is a symlink (index of it in ``.index``)."""

    def __init__(self, index: int, target: str) -> None:
        super().__init__(index, target)
        self.index = index
        self.target = target


class NotADirectoryInPath(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _walk(root_fd: int, comps: Sequence[str]) -> int:
    fd = os.dup(root_fd)
    try:
        for c in comps:
            nfd = os.open(c, O_DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _diagnose(root_fd: int, comps: Sequence[str], err: int) -> Exception:
    """Turn ELOOP/ENOTDIR/ENOENT of a walk into an exception naming the component at fault."""
    fd = os.dup(root_fd)
    try:
        for i, c in enumerate(comps):
            try:
                st = os.stat(c, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return FileNotFoundError(
                    errno.ENOENT, "no such directory", "/".join(comps[: i + 1])
                )
            if stat.S_ISLNK(st.st_mode):
                return SymlinkInPath(i, os.readlink(c, dir_fd=fd))
            if not stat.S_ISDIR(st.st_mode):
                return NotADirectoryInPath(i)
            nfd = os.open(c, O_DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    return OSError(err, os.strerror(err), "/".join(comps))


def open_dir(root_fd: int, comps: Sequence[str]) -> int:
    """An O_RDONLY fd of the directory at comps beneath root_fd, following no symlink.

    Raises SymlinkInPath, NotADirectoryInPath or FileNotFoundError naming the component.
    """
    global _have_openat2
    if not comps:
        return os.dup(root_fd)
    try:
        if _have_openat2 is False:
            return _walk(root_fd, comps)
        try:
            fd = syscalls.openat2(root_fd, "/".join(comps), O_DIR, 0, _RESOLVE)
            _have_openat2 = True
            return fd
        except SyscallError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM) and _have_openat2 is None:
                # Kernels before 5.6 (or seccomp filters that deny it): walk by hand.
                _have_openat2 = False
                return _walk(root_fd, comps)
            raise OSError(exc.errno, os.strerror(exc.errno)) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EXDEV):
            raise _diagnose(root_fd, comps, exc.errno) from None
        raise


def remove_entry(parent_fd: int, name: str) -> None:
    """Remove whatever is at name (a directory tree included) without following symlinks."""
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        # shutil.rmtree with dir_fd uses its fd-based walk, which never follows symlinks.
        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


def clear_dir(dir_fd: int) -> None:
    """Remove every entry of the directory dir_fd."""
    for name in os.listdir(dir_fd):
        remove_entry(dir_fd, name)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
