"""Refusing layers that write through a symlink planted by an earlier layer.

Layers are unpacked in parallel, each into its own directory, so no write can leave the layer
directory.  But an entry ``a/b`` over a lower ``a -> /etc`` means the image author asked for a
write through a symlink: overlayfs would silently shadow the link with a directory, a copying
unpacker would follow it.  Both are wrong, so such a layer is refused, the same as a symlink
planted in the same layer.  The check resolves each directory the layer wrote into against the
merged view of the lower layers (overlayfs rules: whiteouts, opaque directories, a non-directory
hides everything below it).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence

from kettle.errors import InvalidArgument
from kettle.snapshot import fsat

_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")


def _opaque(fd: int) -> bool:
    for name in _OPAQUE:
        try:
            if os.getxattr(fd, name) == b"y":
                return True
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return False


class _Lower:
    """One lower layer's directory; paths in it are opened by a kernel walk, no fd cache
    (a big image has more directories than a process may hold fds)."""

    def __init__(self, path: str) -> None:
        self.root = os.open(path, fsat.O_DIR)

    def dir_fd(self, comps: tuple[str, ...]) -> int | None:
        try:
            return fsat.open_dir(self.root, comps)
        except (OSError, fsat.SymlinkInPath, fsat.NotADirectoryInPath):
            return None

    def close(self) -> None:
        os.close(self.root)


def check_layer_parents(lower_dirs: Sequence[str], parents: Iterable[str], what: str) -> None:
    """Raise InvalidArgument when a directory in ``parents`` is a symlink in the merged lowers.

    ``lower_dirs`` are the directories of the layers below, lowest first.
    """
    if not lower_dirs:
        return
    lowers = [_Lower(d) for d in reversed(lower_dirs)]  # top first
    # For each path checked so far: the layers (indexes into lowers) where it is a directory
    # that shows through in the merged view.
    seen: dict[tuple[str, ...], list[int]] = {(): list(range(len(lowers)))}
    try:
        for parent in sorted(parents):
            if not parent:
                continue
            comps = tuple(parent.split("/"))
            for depth in range(1, len(comps) + 1):
                prefix = comps[:depth]
                if prefix in seen:
                    active = seen[prefix]
                else:
                    active = _resolve(lowers, seen[prefix[:-1]], prefix, what)
                    seen[prefix] = active
                if not active:
                    break
    finally:
        for low in lowers:
            low.close()


def _resolve(
    lowers: Sequence[_Lower], above: Sequence[int], prefix: tuple[str, ...], what: str
) -> list[int]:
    out: list[int] = []
    for i in above:
        pfd = lowers[i].dir_fd(prefix[:-1])
        if pfd is None:
            continue
        try:
            try:
                st = os.stat(prefix[-1], dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                break  # whited out: nothing below shows
            if stat.S_ISLNK(st.st_mode):
                if not out:
                    target = os.readlink(prefix[-1], dir_fd=pfd)
                    raise InvalidArgument(
                        f"{what}: writes into {'/'.join(prefix)!r}, a symlink (-> {target}) of"
                        " a lower layer"
                    )
                break
            if not stat.S_ISDIR(st.st_mode):
                break
            out.append(i)
            fd = os.open(prefix[-1], fsat.O_DIR, dir_fd=pfd)
            try:
                if _opaque(fd):
                    break
            finally:
                os.close(fd)
        finally:
            os.close(pfd)
    return out


def inherit_implicit_dirs(
    lower_dirs: Sequence[str], layer_dir: str, implicit: Iterable[str]
) -> None:
    """Give directories a layer created without an entry the attributes they have below.

    A layer that adds ``usr/lib/x`` without listing ``usr/lib`` must not turn ``usr/lib`` into
    a root-owned 0755 directory in the merged view (containerd does the same).
    """
    if not lower_dirs:
        return
    lowers = [_Lower(d) for d in reversed(lower_dirs)]
    top = os.open(layer_dir, fsat.O_DIR)
    try:
        for path in sorted(implicit, key=lambda p: -p.count("/")):
            comps = tuple(path.split("/"))
            st = _lower_dir_stat(lowers, comps)
            if st is None:
                continue
            try:
                pfd = fsat.open_dir(top, comps[:-1])
            except (OSError, fsat.SymlinkInPath, fsat.NotADirectoryInPath):
                continue
            try:
                fd = os.open(comps[-1], fsat.O_DIR, dir_fd=pfd)
                try:
                    os.fchown(fd, st.st_uid, st.st_gid)
                    os.fchmod(fd, stat.S_IMODE(st.st_mode))
                    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(fd)
            finally:
                os.close(pfd)
    finally:
        os.close(top)
        for low in lowers:
            low.close()


def _lower_dir_stat(lowers: Sequence[_Lower], comps: tuple[str, ...]) -> os.stat_result | None:
    for low in lowers:
        pfd = low.dir_fd(comps[:-1])
        if pfd is None:
            continue
        try:
            st = os.stat(comps[-1], dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        finally:
            os.close(pfd)
        return st if stat.S_ISDIR(st.st_mode) else None
    return None
