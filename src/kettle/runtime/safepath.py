"""Opening and creating paths inside a directory tree that may be hostile, fd first.

A container image is untrusted: its symlinks may point anywhere ("/etc -> /host/etc",
"x -> ../../.."), and a running container may change the tree while we work in it.  Every
function here resolves a path as if ``root_fd`` were "/": absolute symlinks and ".." stay
inside the root, exactly as openat2(RESOLVE_IN_ROOT) scopes them.  Each returns a file
descriptor, so what the caller then acts on is what was resolved (mount onto
``/proc/self/fd/N``, never onto a path string that could be swapped in between: the pattern
of the CVE-2021-30465 fix).

openat2 (Linux 5.6) does the resolution in the kernel.  Where it is missing (ENOSYS: older
kernels, seccomp profiles that predate it) a walk one component at a time with O_NOFOLLOW does
the same in user space, following each symlink by hand from the root.  The walk also creates
what is missing, like runc's securejoin + MkdirAll: a dangling symlink's target is created
inside the root, never outside it.

Known difference of the walk: magic links (/proc/self/fd/N inside the root) are followed as
the plain path they print, scoped to the root, where openat2 refuses them with ELOOP.
"""

from __future__ import annotations

import errno
import os
import stat

from kettle import syscalls as sc
from kettle.errors import SyscallError

# Not typing.TYPE_CHECKING: importing typing costs milliseconds at every runtime start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: the kernel's MAXSYMLINKS
MAX_SYMLINKS: Final = 40
_RETRIES: Final = 16
_RESOLVE: Final = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
_DIR: Final = os.O_PATH | os.O_DIRECTORY

# What _kernel_open returns instead of an fd.
_WALK: Final = -1  # the kernel cannot resolve it here: walk in user space
_MISSING: Final = -2  # ENOENT

# Cleared the first time the kernel answers ENOSYS, so the probe costs one call per process.
_openat2_works = True


def proc_fd(fd: int) -> str:
    """The magic link of fd, to hand a resolved file to a call that only takes paths."""
    return f"/proc/self/fd/{fd}"


def fd_path(fd: int) -> str:
    """Where fd is, as the kernel prints it (needs /proc)."""
    return os.readlink(proc_fd(fd))


def shown_path(root_fd: int, path: str) -> str:
    """root + path for messages (just path if the root's name cannot be read)."""
    try:
        root = fd_path(root_fd)
    except OSError:
        return path
    return root.rstrip("/") + "/" + path.lstrip("/")


def open_in_root(root_fd: int, path: str, flags: int, *, no_symlinks: bool = False) -> int:
    """open(2) path below root_fd, resolved as if root_fd were "/".

    flags are open(2) flags without O_CREAT (O_PATH, O_DIRECTORY, O_NOFOLLOW, O_RDONLY, ...);
    O_CLOEXEC is always added.  With no_symlinks any symlink on the way fails with ELOOP
    (for proc and sysfs, which must land on an ordinary directory).  Raises SyscallError.
    """
    follow = not flags & os.O_NOFOLLOW
    fd = _kernel_open(root_fd, path, flags, no_symlinks)
    if fd >= 0:
        return fd
    if fd == _MISSING:
        raise SyscallError("openat2", errno.ENOENT, shown_path(root_fd, path))
    try:
        dir_fd, name = _walk(root_fd, path, follow=follow, no_symlinks=no_symlinks)
        try:
            return _finish(dir_fd, name, flags, follow)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise _error("open_in_root", e, root_fd, path) from None


def mkdir_all_in_root(
    root_fd: int, path: str, mode: int = 0o755, *, no_symlinks: bool = False
) -> int:
    """mkdir -p path below root_fd (mode less umask for new directories); an O_PATH fd of it.

    Symlinks on the way are followed inside the root, dangling ones included (their target is
    created); an existing non-directory fails with ENOTDIR.
    """
    fd = _kernel_open(root_fd, path, _DIR, no_symlinks)
    if fd >= 0:
        return fd
    if fd == _MISSING:
        fd = _make_tail(root_fd, path, mode, None, no_symlinks)
        if fd >= 0:
            return fd
    try:
        dir_fd, name = _walk(root_fd, path, follow=True, no_symlinks=no_symlinks, mkdir_mode=mode)
        try:
            return _finish(dir_fd, name, _DIR, True)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise _error("mkdir_all_in_root", e, root_fd, path) from None


def create_file_in_root(root_fd: int, path: str, mode: int = 0o644) -> int:
    """An O_PATH fd of path below root_fd, created as an empty regular file if missing.

    Missing parents are created (0755 less umask); the new file gets exactly mode.  What
    already exists is returned as it is, whatever its type (the caller checks), after
    following symlinks inside the root: a bind mount onto /etc/resolv.conf -> /run/x lands
    on <root>/run/x.
    """
    fd = _kernel_open(root_fd, path, os.O_PATH, False)
    if fd >= 0:
        return fd
    if fd == _MISSING:
        fd = _make_tail(root_fd, path, 0o755, mode, False)
        if fd >= 0:
            return fd
    try:
        dir_fd, name = _walk(root_fd, path, follow=True, mkdir_mode=0o755, file_mode=mode)
        try:
            return _finish(dir_fd, name, os.O_PATH, True)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise _error("create_file_in_root", e, root_fd, path) from None


# --- implementation --------------------------------------------------------------------------


def _error(call: str, e: OSError, root_fd: int, path: str) -> SyscallError:
    return SyscallError(call, e.errno or errno.EIO, shown_path(root_fd, path))


def _kernel_open(root_fd: int, path: str, flags: int, no_symlinks: bool) -> int:
    """openat2 in the root: an fd, _MISSING (ENOENT), or _WALK where the kernel cannot.

    Other errors raise SyscallError.
    """
    global _openat2_works
    if not _openat2_works:
        return _WALK
    resolve = _RESOLVE | (sc.RESOLVE_NO_SYMLINKS if no_symlinks else 0)
    rel = path.lstrip("/") or "."
    for _ in range(_RETRIES):
        try:
            return sc.openat2(root_fd, rel, flags | os.O_CLOEXEC, 0, resolve)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                return _MISSING
            if e.errno == errno.ENOSYS:
                _openat2_works = False
                return _WALK
            if e.errno == errno.EAGAIN:
                continue  # a rename or mount raced with ".." resolution: the kernel asks again
            raise SyscallError("openat2", e.errno, shown_path(root_fd, path)) from None
    return _WALK  # still racing: the walk does not need the kernel's consistency check


def _make_tail(
    root_fd: int, path: str, dir_mode: int, file_mode: int | None, no_symlinks: bool
) -> int:
    """The usual case of a missing path, without the walk: only its last components are
    missing, below a directory that openat2 resolves.

    Makes each missing directory (and, with file_mode, the last component as a regular file)
    relative to the fd of its parent.  Returns an O_PATH fd of path, or -1 for anything
    unusual (a dangling symlink, a race, an error): the walk then handles it, and reports
    any error itself.
    """
    names = [p for p in path.split("/") if p]
    if not names or "." in names or ".." in names:
        return -1
    # The deepest directory that exists (the full path is known to be missing).
    have = len(names) - 1
    fd = -1
    try:
        while have > 0:
            fd = _kernel_open(root_fd, "/".join(names[:have]), _DIR, no_symlinks)
            if fd >= 0:
                break
            if fd == _WALK:
                return -1
            have -= 1
        if have == 0:
            fd = os.open(".", _DIR | os.O_CLOEXEC, dir_fd=root_fd)
    except (OSError, SyscallError):
        return -1
    try:
        last = len(names) - 1
        for i in range(have, len(names)):
            name = names[i]
            if i == last and file_mode is not None:
                if not _make_file(fd, name, file_mode):
                    os.close(fd)
                    return -1
                nxt = _finish(fd, name, os.O_PATH, True)
            else:
                os.mkdir(name, dir_mode, dir_fd=fd)
                # O_NOFOLLOW: swapped for a symlink meanwhile fails here, and the walk retries.
                nxt = os.open(name, _DIR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError:
        os.close(fd)
        return -1
    return fd


def _parts(path: str) -> list[str]:
    """Components of path, last first (a stack to pop from)."""
    return [p for p in reversed(path.split("/")) if p and p != "."]


def _walk(
    root_fd: int,
    path: str,
    *,
    follow: bool,
    no_symlinks: bool = False,
    mkdir_mode: int | None = None,
    file_mode: int | None = None,
) -> tuple[int, str]:
    """Resolve path below root_fd in user space.

    Returns (an fd of the directory that holds the last component, its name); the fd is the
    caller's to close, and name is "." when the path ends on a directory itself ("/", "a/..").
    Missing directories are made when mkdir_mode is given; a missing last component becomes a
    regular file when file_mode is given.  Raises OSError.
    """
    todo = _parts(path)
    # fds of the directories below the root that we are in; ".." pops, so it never leaves
    stack: list[int] = []
    links = races = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if stack:
                    os.close(stack.pop())
                continue
            cur = stack[-1] if stack else root_fd
            last = not todo
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                if last and file_mode is not None:
                    created = _make_file(cur, name, file_mode)
                elif mkdir_mode is not None:
                    created = _make_dir(cur, name, mkdir_mode)
                else:
                    raise
                if not created:
                    races += 1
                    if races > _RETRIES:
                        raise OSError(errno.EAGAIN, "the tree kept changing") from None
                todo.append(name)  # look at what is there now
                continue
            if stat.S_ISLNK(st.st_mode) and (follow or not last):
                if no_symlinks:
                    raise OSError(errno.ELOOP, "symlink on the way")
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links")
                target = os.readlink(name, dir_fd=cur)
                if not target:
                    raise OSError(errno.ENOENT, "empty symlink")
                if target.startswith("/"):
                    while stack:  # absolute: start again from the root, not the host's "/"
                        os.close(stack.pop())
                todo.extend(_parts(target))
                continue
            if last:
                return _take(stack, root_fd), name
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, "not a directory")
            # O_NOFOLLOW|O_DIRECTORY: if it was swapped for a symlink meanwhile, this fails
            stack.append(
                os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
            )
        return _take(stack, root_fd), "."
    finally:
        for fd in stack:
            os.close(fd)


def _take(stack: list[int], root_fd: int) -> int:
    """The innermost directory's fd, owned by the caller."""
    if stack:
        return stack.pop()
    return os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)


def _make_dir(dir_fd: int, name: str, mode: int) -> bool:
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        return False
    return True


def _make_file(dir_fd: int, name: str, mode: int) -> bool:
    try:
        fd = os.open(
            name,
            os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
            dir_fd=dir_fd,
        )
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)  # the umask does not apply to what the caller asked for
    finally:
        os.close(fd)
    return True


def _finish(dir_fd: int, name: str, flags: int, follow: bool) -> int:
    """Open what the walk resolved; a symlink appearing now is a race, not a path to follow."""
    fd = os.open(name, flags | os.O_CLOEXEC | (os.O_NOFOLLOW if follow else 0), dir_fd=dir_fd)
    if follow and flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ELOOP, "swapped for a symlink while resolving")
    return fd
