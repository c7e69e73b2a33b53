"""kctl cp in kettled: tar streams out of and into a container's files, running or not.

Every path inside the container is resolved fd first within the container's root
(kettle.runtime.safepath: openat2 RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS, or its walk), so
absolute symlinks and ".." stay inside it; from there on everything happens relative to
directory fds, never following a symlink (kettle.daemon.copy_tar).  A symlink a container
process swaps in at any moment can therefore redirect a copy only to somewhere else inside
the same container (the CVE-2018-15664 class).  kettle.daemon.copy_root finds the root.

Paths follow ``docker cp``: relative paths are taken from "/", cleaned lexically; the last
component of a source is not followed (a symlink is copied as a symlink) unless the path ends
in "/"; a path ending in "/." stands for a directory's contents (the archive's entries then
start with "./"); otherwise the archive's top entry is named after the path's last component.
A destination is a directory, its last symlink followed.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as statmod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kettle.daemon.copy_root import ContainerRoot, open_root
from kettle.daemon.copy_tar import CHUNK, clean_path, extract_tar, tar_stream
from kettle.errors import (
    FailedPrecondition,
    InvalidArgument,
    KettleError,
    NotFound,
    SyscallError,
)
from kettle.runtime import safepath

if TYPE_CHECKING:
    from kettle.daemon.containers import Containers
    from kettle.snapshot.tarstream import Readable

#: every "no such path" error says this (kctl's cp tells it from "no such container" by it).
NOT_FOUND_TEXT = "could not find the file"


def not_found(path: str, ref: str) -> NotFound:
    return NotFound(f"{NOT_FOUND_TEXT} {path} in container {ref}")


@dataclass
class PathInfo:
    """What kettle.v1.PathStat carries: mode is st_mode (file type bits included)."""

    name: str
    size: int
    mode: int
    mtime_ns: int
    #: for a symlink: what it resolves to inside the container (an absolute path)
    link_target: str = ""

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)


def _syscall_error(e: SyscallError, path: str, ref: str) -> KettleError:
    if e.errno == errno.ENOENT:
        return not_found(path, ref)
    if e.errno == errno.ELOOP:
        return InvalidArgument(
            f"{path} in container {ref}: too many levels of symbolic links (or a /proc link)"
        )
    if e.errno == errno.ENOTDIR:
        return InvalidArgument(f"{path} in container {ref}: a component is not a directory")
    if e.errno == errno.EROFS:
        return FailedPrecondition(f"{path} in container {ref} is on a read-only file system")
    return e


class Source:
    """A path inside a container, opened for CopyOut: its stat and the tar stream of it."""

    def __init__(self, root: ContainerRoot, path: str, ref: str) -> None:
        self.root = root
        self.path = path
        self.ref = ref
        norm, dot, slash = clean_path(path)
        self.parent_fd = -1
        try:
            if dot or slash or norm == "/":
                # The directory itself: resolved to the end, its last symlink followed.
                self.parent_fd = safepath.open_in_root(root.fd, norm, os.O_PATH | os.O_DIRECTORY)
                self.base = "."
                self.arcname = "." if dot or norm == "/" else posixpath.basename(norm)
            else:
                parent = posixpath.dirname(norm)
                self.parent_fd = safepath.open_in_root(root.fd, parent, os.O_PATH | os.O_DIRECTORY)
                self.base = self.arcname = posixpath.basename(norm)
            st = os.stat(self.base, dir_fd=self.parent_fd, follow_symlinks=False)
        except SyscallError as e:
            self.close()
            raise _syscall_error(e, path, ref) from None
        except FileNotFoundError:
            self.close()
            raise not_found(path, ref) from None
        except OSError as e:
            self.close()
            raise SyscallError("stat", e.errno or errno.EIO, f"{ref}:{path}") from None
        link = ""
        if statmod.S_ISLNK(st.st_mode):
            link = _link_target(root.fd, self.parent_fd, self.base, norm)
        self.info = PathInfo(
            name=self.arcname if self.arcname != "." else posixpath.basename(norm) or "/",
            size=st.st_size,
            mode=st.st_mode,
            mtime_ns=st.st_mtime_ns,
            link_target=link,
        )

    def close(self) -> None:
        if self.parent_fd >= 0:
            os.close(self.parent_fd)
            self.parent_fd = -1

    def tar(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """The tar stream, in pieces of about `chunk` bytes.  A writer thread fills a short
        queue; closing the iterator (the client went away) stops it."""
        return tar_stream(self.parent_fd, self.base, self.arcname, self.root.to_container, chunk)


def _link_target(root_fd: int, parent_fd: int, base: str, norm: str) -> str:
    """Where the symlink `norm` leads inside the container, as docker's stat reports it."""
    raw = os.readlink(base, dir_fd=parent_fd)
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(norm), raw))
    try:
        fd = safepath.open_in_root(root_fd, norm, os.O_PATH)
    except SyscallError:
        return lexical  # dangling, or a loop: where it points to, as written
    try:
        top = safepath.fd_path(root_fd).rstrip("/")
        at = safepath.fd_path(fd)
    except OSError:
        return lexical
    finally:
        os.close(fd)
    if at == top or top == "":
        return at or "/"
    if at.startswith(top + "/"):
        return at[len(top) :]
    return lexical


def copy_out(containers: Containers, ref: str, path: str) -> Iterator[PathInfo | bytes]:
    """CopyOut: first the PathInfo of `path` in container `ref`, then the tar stream."""
    with open_root(containers, ref) as root:
        src = Source(root, path, ref)
        try:
            yield src.info
            yield from src.tar()
        finally:
            src.close()
        containers.publish(root.rec, "archive-path", path=path)


def copy_in(
    containers: Containers, ref: str, path: str, source: Readable, keep_ownership: bool
) -> None:
    """CopyIn: unpack the tar `source` into directory `path` of container `ref`.

    Without keep_ownership every entry belongs to the container's root user; with it, to the
    ids the archive names (mapped to the host through the container's user namespace).
    """
    with open_root(containers, ref) as root:
        norm, _dot, _slash = clean_path(path)
        try:
            dest = safepath.open_in_root(root.fd, norm, os.O_RDONLY | os.O_DIRECTORY)
        except SyscallError as e:
            if e.errno == errno.ENOTDIR:
                raise InvalidArgument(
                    f"destination {path} in container {ref} is not a directory"
                ) from None
            raise _syscall_error(e, path, ref) from None
        try:
            if (
                root.readonly
                and not root.running
                and os.fstat(dest).st_dev == os.fstat(root.fd).st_dev
            ):
                raise FailedPrecondition(f"container {ref}: its root file system is read-only")
            owner = None if keep_ownership else root.root_owner
            try:
                extract_tar(source, dest, f"copy to {ref}:{path}", owner=owner, ids=root.to_host)
            except SyscallError as e:
                if e.errno == errno.EROFS:
                    raise _syscall_error(e, path, ref) from None
                raise
        finally:
            os.close(dest)
        containers.publish(root.rec, "extract-to-dir", path=path)


class ChunkReader:
    """The tar bytes of a CopyIn request stream as a Readable (read(n) -> at most n bytes)."""

    def __init__(self, first: bytes, rest: Iterator[bytes]) -> None:
        self._buf = memoryview(first)
        self._rest = rest

    def read(self, n: int, /) -> bytes:
        while not self._buf:
            nxt = next(self._rest, None)
            if nxt is None:
                return b""
            self._buf = memoryview(nxt)
        out = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        return out
