"""Unpacking one layer (a tar stream) into its own directory, stored in overlayfs form.

Every write goes through a directory fd of the layer: parents are opened with openat2
(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) and entries are created with *at calls relative to them.
tarfile only decodes headers.  Hostile entries (absolute paths, ``..``, paths through a symlink,
hardlinks out of the layer, overlay control xattrs, names that are not paths) are refused with
an error naming the layer and the entry; an error leaves the layer directory to be discarded.

OCI whiteouts become overlayfs whiteouts: ``.wh.NAME`` a 0/0 character device NAME,
``.wh..wh..opq`` the xattr ``trusted.overlay.opaque=y`` (``user.overlay.opaque`` when rootless).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from kettle.errors import InvalidArgument, KettleError, ResourceExhausted, SyscallError
from kettle.snapshot import fsat
from kettle.snapshot.tarstream import Readable, TarStream

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
WHITEOUT_META_PREFIX = ".wh..wh."
_XATTR_PREFIX = "SCHILY.xattr."
_O_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FREE_CHECK_BYTES = 16 << 20
_FREE_CHECK_ENTRIES = 2048
_DIR_CACHE = 64


@dataclass(frozen=True)
class ApplyLimits:
    #: bytes of uncompressed tar a layer may have (decompression bombs).
    max_layer_size: int = 64 << 30
    #: bytes that must stay free on the store's file system while unpacking.
    free_space_margin: int = 128 << 20
    max_path: int = 4096
    max_name: int = 255
    max_depth: int = 256


@dataclass
class ApplyResult:
    diff_id: str
    #: bytes of uncompressed tar read.
    tar_size: int
    #: bytes of file data written (sparse holes excluded).
    data_size: int
    entries: int
    #: every directory (as a path) that an entry of the layer was put in: the cross-layer
    #: symlink check needs them.
    parents: set[str] = field(default_factory=set)
    #: directories the layer did not list but needed (their attributes come from below).
    implicit_dirs: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def overlay_xattr_prefix(rootless: bool) -> str:
    return "user.overlay." if rootless else "trusted.overlay."


def split_name(name: str, what: str, limits: ApplyLimits) -> list[str]:
    """Components of a tar entry name; InvalidArgument for anything that is not a plain path."""
    if "\x00" in name:
        raise InvalidArgument(f"{what}: entry name {name!r} contains a nul byte")
    if len(os.fsencode(name)) > limits.max_path:
        raise InvalidArgument(f"{what}: entry name is longer than {limits.max_path} bytes")
    if name.startswith("/"):
        raise InvalidArgument(f"{what}: entry {name!r} is an absolute path")
    comps = [c for c in name.split("/") if c not in ("", ".")]
    if len(comps) > limits.max_depth:
        raise InvalidArgument(
            f"{what}: entry {name[:64]!r}... is nested deeper than {limits.max_depth}"
        )
    for c in comps:
        if c == "..":
            raise InvalidArgument(f"{what}: entry {name!r} contains '..'")
        if len(os.fsencode(c)) > limits.max_name:
            raise InvalidArgument(
                f"{what}: entry {name[:64]!r}... has a component over {limits.max_name} bytes"
            )
    return comps


class Unpacker:
    def __init__(
        self,
        root_fd: int,
        stream: TarStream,
        what: str,
        limits: ApplyLimits,
        rootless: bool,
    ) -> None:
        self.root_fd = root_fd
        self.stream = stream
        self.what = what
        self.limits = limits
        self.rootless = rootless
        self.opaque_xattr = overlay_xattr_prefix(rootless) + "opaque"
        self.result = ApplyResult("", 0, 0, 0)
        self._dirs: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._dir_times: list[tuple[tuple[str, ...], int]] = []
        self._root_info: tarfile.TarInfo | None = None
        self._since_check = 0
        self._bytes_since_check = 0
        self._pkey: tuple[str, ...] = ()
        self._noted: set[str] = set()

    # --- helpers ------------------------------------------------------------------------------

    def note(self, key: str, text: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.result.notes.append(text)
            log.info("%s", text)

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _forget_dirs(self, prefix: tuple[str, ...]) -> None:
        n = len(prefix)
        for key in [k for k in self._dirs if k[:n] == prefix]:
            os.close(self._dirs.pop(key))

    def _check_space(self, force: bool = False) -> None:
        self._since_check += 1
        if not force and self._since_check < _FREE_CHECK_ENTRIES:
            return
        self._since_check = 0
        self._bytes_since_check = 0
        margin = self.limits.free_space_margin
        if margin <= 0:
            return
        st = os.statvfs(self.root_fd)
        free = st.f_bavail * st.f_frsize
        if free < margin:
            raise ResourceExhausted(
                f"{self.what}: only {free} bytes left on the store's file system (margin {margin})"
            )

    def parent(self, comps: Sequence[str], name: str) -> int:
        """fd of the directory comps (created when missing); never through a symlink."""
        key = tuple(comps)
        fd = self._dirs.get(key)
        if fd is not None:
            self._dirs.move_to_end(key)
            return fd
        try:
            fd = fsat.open_dir(self.root_fd, comps)
        except FileNotFoundError:
            fd = self._make_parents(comps, name)
        except fsat.SymlinkInPath as exc:
            raise InvalidArgument(
                f"{self.what}: entry {name!r} goes through symlink"
                f" {'/'.join(comps[: exc.index + 1])!r} (-> {exc.target})"
            ) from None
        except fsat.NotADirectoryInPath as exc:
            raise InvalidArgument(
                f"{self.what}: entry {name!r}: {'/'.join(comps[: exc.index + 1])!r} is not a"
                " directory"
            ) from None
        self._dirs[key] = fd
        if len(self._dirs) > _DIR_CACHE:
            _, old = self._dirs.popitem(last=False)
            os.close(old)
        self.result.parents.add("/".join(comps))
        return fd

    def _make_parents(self, comps: Sequence[str], name: str) -> int:
        # The deepest existing ancestor is found by the kernel walk failing; create the rest
        # one level at a time, each relative to the fd of the level above.
        fd = os.dup(self.root_fd)
        try:
            for i, c in enumerate(comps):
                try:
                    os.mkdir(c, 0o755, dir_fd=fd)
                    self.result.implicit_dirs.add("/".join(comps[: i + 1]))
                except FileExistsError:
                    pass
                try:
                    nfd = os.open(c, fsat.O_DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise InvalidArgument(
                            f"{self.what}: entry {name!r}: {'/'.join(comps[: i + 1])!r} is a"
                            " symlink or not a directory"
                        ) from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _clear(self, parent_fd: int, base: str) -> None:
        st = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            # Cached fds below a replaced directory would point into the deleted tree.
            self._forget_dirs((*self._pkey, base))
        fsat.remove_entry(parent_fd, base)

    def _xattrs(self, info: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        out = []
        for key, value in info.pax_headers.items():
            if not key.startswith(_XATTR_PREFIX):
                continue
            xname = key[len(_XATTR_PREFIX) :]
            if ".overlay." in xname:
                raise InvalidArgument(
                    f"{self.what}: entry {info.name!r} sets overlay control xattr {xname!r}"
                )
            if self.rootless and not xname.startswith("user."):
                self.note("xattr", f"{self.what}: non-user xattrs skipped (rootless)")
                continue
            out.append((xname, value.encode("utf-8", "surrogateescape")))
        return out

    def _owner(self, info: tarfile.TarInfo) -> bool:
        if self.rootless:
            self.note("owner", f"{self.what}: file ownership not applied (rootless)")
            return False
        return True

    # --- entry types ----------------------------------------------------------------------

    def _create_file(self, parent_fd: int, base: str, info: tarfile.TarInfo) -> None:
        try:
            fd = os.open(base, _O_FILE, 0o600, dir_fd=parent_fd)
        except FileExistsError:
            self._clear(parent_fd, base)
            fd = os.open(base, _O_FILE, 0o600, dir_fd=parent_fd)
        try:
            if info.sparse:
                self._write_sparse(fd, info)
            else:
                self._copy(fd, info.size)
            if self._owner(info):
                os.fchown(fd, info.uid, info.gid)
            os.fchmod(fd, info.mode & 0o7777)
            for xname, value in self._xattrs(info):
                os.setxattr(fd, xname, value)
            os.utime(fd, ns=(_ns(info.mtime), _ns(info.mtime)))
        finally:
            os.close(fd)

    def _copy(self, fd: int, size: int) -> None:
        written = 0
        while written < size:
            views = self.stream.chunks(size - written)
            if not views:
                raise InvalidArgument(f"{self.what}: tar stream ends inside a file")
            for v in views:
                fsat.write_all(fd, v)
                written += len(v)
        self.result.data_size += size
        self._bytes_since_check += size
        if self._bytes_since_check >= _FREE_CHECK_BYTES:
            self._check_space(force=True)

    def _write_sparse(self, fd: int, info: tarfile.TarInfo) -> None:
        sparse = cast(list[tuple[int, int]], info.sparse)
        for offset, numbytes in sparse:
            if offset < 0 or numbytes < 0 or offset + numbytes > info.size:
                raise InvalidArgument(f"{self.what}: entry {info.name!r} has a bad sparse map")
            os.lseek(fd, offset, os.SEEK_SET)
            self._copy(fd, numbytes)
        os.ftruncate(fd, info.size)

    def _create_dir(
        self, parent_fd: int, base: str, comps: list[str], info: tarfile.TarInfo
    ) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            st = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self._clear(parent_fd, base)
                os.mkdir(base, 0o700, dir_fd=parent_fd)
        fd = os.open(base, fsat.O_DIR, dir_fd=parent_fd)
        try:
            self._dir_attrs(fd, info)
        finally:
            os.close(fd)
        self._dir_times.append((tuple(comps), _ns(info.mtime)))
        self.result.implicit_dirs.discard("/".join(comps))

    def _dir_attrs(self, fd: int, info: tarfile.TarInfo) -> None:
        if self._owner(info):
            os.fchown(fd, info.uid, info.gid)
        os.fchmod(fd, info.mode & 0o7777)
        for xname, value in self._xattrs(info):
            os.setxattr(fd, xname, value)

    def _create_symlink(self, parent_fd: int, base: str, info: tarfile.TarInfo) -> None:
        if not info.linkname or "\x00" in info.linkname:
            raise InvalidArgument(f"{self.what}: symlink {info.name!r} has no valid target")
        try:
            os.symlink(info.linkname, base, dir_fd=parent_fd)
        except FileExistsError:
            self._clear(parent_fd, base)
            os.symlink(info.linkname, base, dir_fd=parent_fd)
        if self._owner(info):
            os.chown(base, info.uid, info.gid, dir_fd=parent_fd, follow_symlinks=False)
        if self._xattrs(info):
            self.note("symlink-xattr", f"{self.what}: xattrs on symlinks not applied")
        os.utime(
            base, ns=(_ns(info.mtime), _ns(info.mtime)), dir_fd=parent_fd, follow_symlinks=False
        )

    def _create_hardlink(self, parent_fd: int, base: str, info: tarfile.TarInfo) -> None:
        target = split_name(info.linkname, f"{self.what}: hardlink {info.name!r}", self.limits)
        if not target:
            raise InvalidArgument(f"{self.what}: hardlink {info.name!r} points at the root")
        try:
            tparent = fsat.open_dir(self.root_fd, target[:-1])
        except (FileNotFoundError, fsat.SymlinkInPath, fsat.NotADirectoryInPath):
            raise InvalidArgument(
                f"{self.what}: hardlink {info.name!r} -> {info.linkname!r}: target is not a file"
                " of this layer"
            ) from None
        try:
            try:
                tst = os.stat(target[-1], dir_fd=tparent, follow_symlinks=False)
            except FileNotFoundError:
                raise InvalidArgument(
                    f"{self.what}: hardlink {info.name!r} -> {info.linkname!r}: target is not"
                    " in this layer"
                ) from None
            if stat.S_ISDIR(tst.st_mode):
                raise InvalidArgument(
                    f"{self.what}: hardlink {info.name!r} -> {info.linkname!r} is a directory"
                )
            if tuple(target) == (*self._comps_of(info.name),):
                return  # a link to itself: nothing to do
            try:
                os.link(
                    target[-1],
                    base,
                    src_dir_fd=tparent,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            except FileExistsError:
                self._clear(parent_fd, base)
                os.link(
                    target[-1],
                    base,
                    src_dir_fd=tparent,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
        finally:
            os.close(tparent)

    def _comps_of(self, name: str) -> list[str]:
        return split_name(name, self.what, self.limits)

    def _create_node(self, parent_fd: int, base: str, info: tarfile.TarInfo) -> None:
        if info.type == tarfile.FIFOTYPE:
            kind = stat.S_IFIFO
        elif info.type == tarfile.CHRTYPE:
            kind = stat.S_IFCHR
        else:
            kind = stat.S_IFBLK
        is_whiteout = kind == stat.S_IFCHR and info.devmajor == 0 and info.devminor == 0
        if self.rootless and kind != stat.S_IFIFO and not is_whiteout:
            self.note(
                "devices", f"{self.what}: device nodes skipped (rootless), e.g. {info.name!r}"
            )
            return
        dev = os.makedev(info.devmajor, info.devminor)
        try:
            os.mknod(base, kind | 0o600, dev, dir_fd=parent_fd)
        except FileExistsError:
            self._clear(parent_fd, base)
            os.mknod(base, kind | 0o600, dev, dir_fd=parent_fd)
        if self._owner(info):
            os.chown(base, info.uid, info.gid, dir_fd=parent_fd, follow_symlinks=False)
        os.chmod(base, info.mode & 0o7777, dir_fd=parent_fd, follow_symlinks=False)
        os.utime(
            base, ns=(_ns(info.mtime), _ns(info.mtime)), dir_fd=parent_fd, follow_symlinks=False
        )

    def _whiteout(self, parent_fd: int, base: str, info: tarfile.TarInfo) -> None:
        if base == OPAQUE:
            os.setxattr(parent_fd, self.opaque_xattr, b"y")
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            self.note("wh-meta", f"{self.what}: aufs metadata entry {info.name!r} skipped")
            return
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise InvalidArgument(f"{self.what}: whiteout {info.name!r} names no entry")
        try:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent_fd)
        except FileExistsError:
            self._clear(parent_fd, target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent_fd)

    # --- the loop -------------------------------------------------------------------------

    def entry(self, info: tarfile.TarInfo) -> None:
        self.result.entries += 1
        self._check_space()
        comps = split_name(info.name, self.what, self.limits)
        if not comps:
            if not info.isdir():
                raise InvalidArgument(f"{self.what}: entry {info.name!r} replaces the layer root")
            self._root_info = info
            return
        parent_fd = self.parent(comps[:-1], info.name)
        self._pkey = tuple(comps[:-1])
        base = comps[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_fd, base, info)
        else:
            self._create(parent_fd, base, comps, info)

    def _create(self, parent_fd: int, base: str, comps: list[str], info: tarfile.TarInfo) -> None:
        """Make the member's file, directory, link or node as base under parent_fd."""
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) or info.issparse():
            self._create_file(parent_fd, base, info)
        elif info.type == tarfile.DIRTYPE:
            self._create_dir(parent_fd, base, comps, info)
        elif info.type == tarfile.SYMTYPE:
            self._create_symlink(parent_fd, base, info)
        elif info.type == tarfile.LNKTYPE:
            self._create_hardlink(parent_fd, base, info)
        elif info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            self._create_node(parent_fd, base, info)
        else:
            raise InvalidArgument(
                f"{self.what}: entry {info.name!r} has unsupported tar type {info.type!r}"
            )

    def finish(self) -> None:
        if self._root_info is not None:
            self._dir_attrs(self.root_fd, self._root_info)
        # Directory mtimes last, deepest first: creating children changes a parent's mtime.
        for comps, mtime in sorted(self._dir_times, key=lambda t: -len(t[0])):
            pfd = self.parent(list(comps[:-1]), "/".join(comps))
            os.utime(comps[-1], ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)
        if self._root_info is not None:
            m = _ns(self._root_info.mtime)
            os.utime(self.root_fd, ns=(m, m))


def _ns(mtime: float) -> int:
    return int(mtime * 1_000_000_000) if isinstance(mtime, float) else int(mtime) * 1_000_000_000


class Members(tarfile.TarFile):
    """tarfile as a header decoder only: members are not kept (a layer may have millions)."""

    def next(self) -> tarfile.TarInfo | None:
        info = super().next()
        vars(self)["members"].clear()
        return info


def unpack_stream(stream: TarStream, unpacker: Unpacker, what: str) -> None:
    """Hand every member of the tar stream to the unpacker, finish it and drain the stream;
    tar and OS errors become one line naming `what`.  The unpacker is closed either way."""
    try:
        try:
            try:
                tf: Members | None = Members(
                    fileobj=stream,  # type: ignore[arg-type]  # read-only: no write/close needed
                    mode="r",
                    encoding="utf-8",
                    errors="surrogateescape",
                )
            except tarfile.ReadError:
                # tarfile calls a stream that starts with an end marker (an empty layer or
                # copy, which is valid) unreadable.
                if stream.tell() > 2 * tarfile.BLOCKSIZE or not stream.all_zero:
                    raise
                tf = None
            # Whatever an entry does not consume (padding, a body on a directory) is skipped
            # by tarfile's own forward seek to the next header.
            while tf is not None:
                info = tf.next()
                if info is None:
                    break
                unpacker.entry(info)
            unpacker.finish()
            stream.drain()
        except tarfile.TarError as exc:
            raise InvalidArgument(f"{what}: not a valid tar stream ({exc})") from None
        except OSError as exc:
            raise os_error(exc, what) from None
    finally:
        unpacker.close()


def apply_layer(
    source: Readable,
    root_fd: int,
    what: str,
    limits: ApplyLimits | None = None,
    rootless: bool | None = None,
) -> ApplyResult:
    """Unpack the uncompressed tar ``source`` beneath ``root_fd``; the layer's diff id is returned.

    ``what`` names the layer in errors.  On error the directory is left partly written: the
    caller discards it.
    """
    limits = limits or ApplyLimits()
    if rootless is None:
        rootless = os.geteuid() != 0
    stream = TarStream(source, what, limits.max_layer_size)
    unpacker = Unpacker(root_fd, stream, what, limits, rootless)
    unpack_stream(stream, unpacker, what)
    r = unpacker.result
    r.diff_id = stream.diff_id
    r.tar_size = stream.total
    return r


def os_error(exc: OSError, what: str) -> KettleError:
    err = exc.errno or errno.EIO
    if err in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{what}: no space left on the store's file system")
    name = exc.filename if isinstance(exc.filename, str) else None
    return SyscallError("unpack", err, name, what)
