"""Tar streams to and from a directory tree that may be hostile, on directory fds only.

The tree is a container's: its processes may rename, replace or swap any entry for a symlink
while we work.  So nothing here takes a path string from the tree's root: every entry is
reached relative to the fd of its parent directory, with O_NOFOLLOW, and what is acted on is
what was opened.

* Writing (``TarWriter``): a directory is opened O_NOFOLLOW|O_DIRECTORY and listed through
  its fd; a regular file is opened O_PATH|O_NOFOLLOW, checked with fstat, and only then reopened
  for reading through its /proc/self/fd link, so an entry swapped meanwhile for a device node or
  a FIFO is never opened; devices, FIFOs and symlinks are written from lstat alone.  Hard links
  within the archive become tar hard links.
* Reading (``extract_tar``): kettle.snapshot.apply's unpacker (the layer unpacker: parents
  opened with openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS below the destination's fd, entries
  made with *at calls and O_EXCL|O_NOFOLLOW, no entry ever followed through a symlink), with
  ``docker cp``'s rules instead of a layer's: no whiteouts, the destination directory's own
  entry ("." in the archive) left alone, and no directory replaced by a non-directory or the
  other way round.
"""

from __future__ import annotations

import errno
import os
import posixpath
import queue
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, SyscallError
from kettle.snapshot.apply import (
    ApplyLimits,
    ApplyResult,
    Unpacker,
    split_name,
    unpack_stream,
)
from kettle.snapshot.tarstream import Readable, TarStream

#: an entry that keeps changing type under us is given up after this many looks.
_RETRIES = 8
_COPY_BUF = 1 << 20
#: bytes per piece of a tar stream (a gRPC message each).
CHUNK = 512 << 10
_QUEUE_DEPTH = 8
_POLL_S = 0.2
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: maps an (uid, gid) pair from one side of an id mapping to the other.
IdMapper = Callable[[int, int], tuple[int, int]]


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Tar(tarfile.TarFile):
    """tarfile that forgets members once written (a copy may hold millions of entries)."""

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: object = None) -> None:
        super().addfile(tarinfo, fileobj)  # type: ignore[arg-type]
        vars(self)["members"].clear()


class _Exact:
    """Exactly `size` bytes of fd for tarfile: a file that shrank meanwhile is padded with
    zeros, one that grew is cut, so the header written before stays true."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size
        self.eof = False

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        parts: list[bytes] = []
        got = 0
        while got < n and not self.eof:
            b = os.read(self.fd, n - got)
            if not b:
                self.eof = True
                break
            parts.append(b)
            got += len(b)
        if got < n:
            parts.append(b"\0" * (n - got))
        self.left -= n
        return b"".join(parts)


def _same(uid: int, gid: int) -> tuple[int, int]:
    return uid, gid


class TarWriter:
    """Writes entries below directory fds as one uncompressed PAX tar stream to `out`.

    `ids` maps the tree's (host) owners to what the archive says (the container's ids).
    """

    def __init__(self, out: Sink, ids: IdMapper | None = None) -> None:
        self.tf = _Tar.open(
            fileobj=cast(Any, out),  # tarfile only calls write() in "w|"
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
        )
        vars(self.tf)["copybufsize"] = _COPY_BUF  # not in the stubs: tarfile's 16 KiB is slow
        self.ids = ids or _same
        self._links: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        self.tf.close()

    def add(self, parent_fd: int, base: str, arcname: str) -> None:
        """Add the entry `base` of directory parent_fd (all of it, for a directory) as
        `arcname`.  base "." adds the directory parent_fd itself.  Symlinks are stored, never
        followed.  An entry that is gone by the time we get to it is left out, as tar does."""
        for _ in range(_RETRIES):
            try:
                st = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if self._add(parent_fd, base, arcname, st):
                return
        raise FailedPrecondition(f"{arcname}: kept changing while it was copied")

    def _add(self, parent_fd: int, base: str, arcname: str, st: os.stat_result) -> bool:
        """False: the entry changed between the lstat and the open (look again)."""
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            try:
                fd = os.open(base, _O_DIR, dir_fd=parent_fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    return False
                raise
            try:
                self._dir(fd, arcname)
            finally:
                os.close(fd)
        elif stat.S_ISREG(mode):
            try:
                pfd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            except FileNotFoundError:
                return False
            try:
                st = os.fstat(pfd)
                if not stat.S_ISREG(st.st_mode):
                    return False
                self._file(pfd, st, arcname)
            finally:
                os.close(pfd)
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(base, dir_fd=parent_fd)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT):
                    return False
                raise
            info = self._info(arcname, st, tarfile.SYMTYPE)
            info.linkname = target
            self.tf.addfile(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            if self._hardlink(arcname, st):
                return True
            kind = (
                tarfile.CHRTYPE
                if stat.S_ISCHR(mode)
                else tarfile.BLKTYPE
                if stat.S_ISBLK(mode)
                else tarfile.FIFOTYPE
            )
            info = self._info(arcname, st, kind)
            if kind != tarfile.FIFOTYPE:
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tf.addfile(info)
        # sockets (and anything else) cannot travel in a tar: left out, as Docker does
        return True

    def _info(self, arcname: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = self.ids(st.st_uid, st.st_gid)
        info.mtime = int(st.st_mtime)
        return info

    def _hardlink(self, arcname: str, st: os.stat_result) -> bool:
        """True if the inode is already in the archive: a hard link to it is written."""
        if st.st_nlink < 2:
            return False
        key = (st.st_dev, st.st_ino)
        first = self._links.get(key)
        if first is None:
            self._links[key] = arcname
            return False
        info = self._info(arcname, st, tarfile.LNKTYPE)
        info.linkname = first
        self.tf.addfile(info)
        return True

    def _dir(self, fd: int, arcname: str) -> None:
        self.tf.addfile(self._info(arcname, os.fstat(fd), tarfile.DIRTYPE))
        prefix = arcname.rstrip("/") + "/"
        for name in sorted(os.listdir(fd)):
            self.add(fd, name, prefix + name)

    def _file(self, path_fd: int, st: os.stat_result, arcname: str) -> None:
        if self._hardlink(arcname, st):
            return
        # The O_PATH fd names exactly the regular file fstat saw; reopening it through its
        # magic link cannot land on anything swapped in since (a device would be opened).
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            info = self._info(arcname, st, tarfile.REGTYPE)
            info.size = st.st_size
            self.tf.addfile(info, _Exact(fd, st.st_size))
        finally:
            os.close(fd)


def clean_path(path: str) -> tuple[str, bool, bool]:
    """(the absolute, lexically cleaned path, ends in "/.", ends in "/"): how docker cp reads
    a path inside a container."""
    text = "/" + path.lstrip("/")
    dot = text == "/." or text.endswith("/.")
    slash = text.endswith("/")
    norm = posixpath.normpath(text)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm, dot, slash


def rebase(old: str, new: str) -> Callable[[str], str]:
    """docker's RebaseArchiveEntries: names `old` and `old/...` become `new` and `new/...`."""
    old = old.rstrip("/") or "."

    def fn(name: str) -> str:
        if name == old:
            return new
        if name.startswith(old + "/"):
            return new + name[len(old) :]
        return name

    return fn


# --- a tar stream as an iterator of pieces ----------------------------------------------------


class _Stopped(Exception):
    pass


class _QueueSink:
    def __init__(
        self, q: queue.Queue[bytes | BaseException | None], stop: threading.Event, chunk: int
    ) -> None:
        self.q = q
        self.stop = stop
        self.chunk = chunk
        self.buf: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.buf.append(bytes(data))
        self.size += len(data)
        if self.size >= self.chunk:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            data = b"".join(self.buf)
            self.buf, self.size = [], 0
            self.put(data)

    def put(self, item: bytes | BaseException | None) -> None:
        while True:
            try:
                self.q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise _Stopped from None


def tar_stream(
    parent_fd: int, base: str, arcname: str, ids: IdMapper | None = None, chunk: int = CHUNK
) -> Iterator[bytes]:
    """TarWriter.add(parent_fd, base, arcname) as pieces of about `chunk` bytes.

    A writer thread fills a short queue; closing the iterator (the client went away) stops it
    and waits for it, so the fds may be closed afterwards.  Errors are raised here.
    """
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
    stop = threading.Event()
    sink = _QueueSink(q, stop, chunk)

    def work() -> None:
        try:
            writer = TarWriter(sink, ids)
            writer.add(parent_fd, base, arcname)
            writer.close()
            sink.flush()
            sink.put(None)
        except _Stopped:
            return
        except BaseException as e:  # handed to the consumer, which raises it
            try:
                sink.put(e)
            except _Stopped:
                return

    worker = threading.Thread(target=work, name="cp-out", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, KettleError):
                raise item
            if isinstance(item, OSError):
                name = item.filename if isinstance(item.filename, str) else None
                raise SyscallError("archive", item.errno or errno.EIO, name) from None
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        worker.join()


# --- extraction -------------------------------------------------------------------------------


class _CopyUnpacker(Unpacker):
    """The layer unpacker with docker cp's rules (see the module's docstring)."""

    def __init__(
        self,
        dest_fd: int,
        stream: TarStream,
        what: str,
        limits: ApplyLimits,
        owner: tuple[int, int] | None,
        ids: IdMapper,
        rename: Callable[[str], str] | None,
    ) -> None:
        super().__init__(dest_fd, stream, what, limits, rootless=os.geteuid() != 0)
        self.owner = owner
        self.ids = ids
        self.rename = rename

    def entry(self, info: tarfile.TarInfo) -> None:
        self.result.entries += 1
        if self.rename is not None:
            info.name = self.rename(info.name)
            if info.type == tarfile.LNKTYPE:
                info.linkname = self.rename(info.linkname)
        comps = split_name(info.name, self.what, self.limits)
        if not comps:
            if not info.isdir():
                raise InvalidArgument(
                    f"{self.what}: entry {info.name!r} would replace the destination directory"
                )
            return  # docker cp leaves the destination directory itself as it is
        if self.owner is not None:
            info.uid, info.gid = self.owner
        else:
            info.uid, info.gid = self.ids(info.uid, info.gid)
        parent_fd = self.parent(comps[:-1], info.name)
        self._pkey = tuple(comps[:-1])
        base = comps[-1]
        self._no_dir_swap(parent_fd, base, info)
        self._create(parent_fd, base, comps, info)

    def _no_dir_swap(self, parent_fd: int, base: str, info: tarfile.TarInfo) -> None:
        """Docker's NoOverwriteDirNonDir: neither kind replaces the other."""
        try:
            st = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and info.type != tarfile.DIRTYPE:
            raise InvalidArgument(
                f"{self.what}: cannot overwrite directory {info.name!r} with a non-directory"
            )
        if not is_dir and info.type == tarfile.DIRTYPE:
            raise InvalidArgument(
                f"{self.what}: cannot overwrite non-directory {info.name!r} with a directory"
            )


def extract_tar(
    source: Readable,
    dest_fd: int,
    what: str,
    *,
    owner: tuple[int, int] | None = None,
    ids: IdMapper | None = None,
    rename: Callable[[str], str] | None = None,
) -> ApplyResult:
    """Unpack the uncompressed tar `source` into the directory dest_fd.

    owner: give every entry this (host) uid and gid; else the archive's, through `ids`.
    rename: applied to every entry's name (and hard link target) first (see rebase()).
    Entries with ".." or absolute names, and entries reached through a symlink, are refused
    (InvalidArgument naming `what` and the entry).  What was written before an error stays.
    """
    # No free-space margin: unlike the image store, a container's disk is its owner's to fill.
    limits = ApplyLimits(free_space_margin=0)
    stream = TarStream(source, what, limits.max_layer_size)
    unpacker = _CopyUnpacker(dest_fd, stream, what, limits, owner, ids or _same, rename)
    unpack_stream(stream, unpacker, what)
    return unpacker.result
