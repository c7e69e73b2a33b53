"""kctl cp [-a] [-L] CONTAINER:SRC HOSTDEST|-   and   kctl cp [-a] [-L] HOSTSRC|- CONTAINER:DEST

docker cp's rules: a trailing "/." copies a directory's contents; a destination that exists
as a directory receives the source inside it, one that does not exist becomes the source's
copy; a directory never replaces a file nor the other way round; "-" is a tar stream on
stdin or stdout.  Host-side archives are made and unpacked on directory fds by the same code
kettled uses (kettle.daemon.copy_tar), so an archive from a container cannot write outside
the destination on the host either.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import stat
import sys
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kettle.api import SERVICE
from kettle.api import kettle_pb as pb
from kettle.errors import InvalidArgument, KettleError, NotFound, SyscallError

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "copy files between a container and the host"
#: kettled's "no such path" errors say this (kettle.daemon.copy.NOT_FOUND_TEXT).
_NOT_FOUND_TEXT = "could not find the file"
_STDIO_CHUNK = 512 << 10


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-a", "--archive", action="store_true", help="keep uid/gid (copy all uid/gid information)"
    )
    p.add_argument(
        "-L", "--follow-link", action="store_true", help="always follow a symlink in SRC"
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")


@dataclass
class _Arg:
    container: str
    path: str


def _split(arg: str) -> _Arg:
    """docker's splitCpArg: an absolute or ./ path is local, else CONTAINER:PATH if a ":"."""
    if arg == "-" or arg.startswith(("/", ".")):
        return _Arg("", arg)
    container, sep, path = arg.partition(":")
    if not sep:
        return _Arg("", arg)
    if not container:
        raise InvalidArgument(f"{arg!r}: no container before ':'")
    return _Arg(container, path)


def run(client: Client, a: argparse.Namespace) -> int:
    src, dest = _split(a.src), _split(a.dest)
    if src.container and dest.container:
        raise InvalidArgument("copying between containers is not supported")
    if not src.container and not dest.container:
        raise InvalidArgument("one of SRC and DEST must be CONTAINER:PATH")
    if src.container:
        _copy_out(client, src, dest.path, a.archive, a.follow_link)
    else:
        _copy_in(client, src.path, dest, a.archive, a.follow_link)
    return 0


# --- paths ------------------------------------------------------------------------------------


def _current_dir(path: str) -> bool:
    return path == "." or path.endswith("/.")


def _trailing_sep(path: str) -> bool:
    return path.endswith("/")


def _base(path: str) -> str:
    """docker's SplitPathDirEntry base: "." for a path naming a directory's contents."""
    if _current_dir(path):
        return "."
    norm = posixpath.normpath(path)
    return "." if norm == "/" else posixpath.basename(norm)


def _parent(path: str) -> str:
    norm = posixpath.normpath(path)
    if _current_dir(path):
        return norm
    return posixpath.dirname(norm) or "."


def _rebase_name(path: str, resolved: str) -> tuple[str, str]:
    """docker's GetRebaseName: (resolved path keeping path's trailing "/." or "/", the name
    the archive's top entry must take instead of resolved's, or "")."""
    if _current_dir(path) and not _current_dir(resolved):
        resolved = resolved.rstrip("/") + "/."
    if _trailing_sep(path) and not _trailing_sep(resolved):
        resolved += "/"
    rebase = ""
    if _base(path) != _base(resolved):
        rebase = _base(path)
    return resolved, rebase


# --- talking to kettled -----------------------------------------------------------------------


def _copy_out_call(client: Client, cid: str, path: str) -> Any:
    return client._method("CopyOut")(pb.CopyOutRequest(id=cid, path=path))


def _stat(client: Client, cid: str, path: str) -> pb.PathStat | None:
    """The stat of path in the container; None if there is no such path."""
    call = _copy_out_call(client, cid, path)
    try:
        first = next(call)
    except client._grpc.RpcError as e:
        err = client._error(e)
        if isinstance(err, NotFound) and _NOT_FOUND_TEXT in str(err):
            return None
        raise err from None
    finally:
        call.cancel()  # only the stat was wanted, not the archive behind it
    assert isinstance(first, pb.TarChunk) and first.stat is not None
    return first.stat


def _open_archive(
    client: Client, cid: str, path: str
) -> tuple[pb.PathStat, Generator[bytes, None, None]]:
    call = _copy_out_call(client, cid, path)
    try:
        first = next(call)
    except client._grpc.RpcError as e:
        raise client._error(e) from None
    assert isinstance(first, pb.TarChunk) and first.stat is not None

    def data() -> Generator[bytes, None, None]:
        try:
            for chunk in call:
                yield chunk.data
        except client._grpc.RpcError as e:
            raise client._error(e) from None
        finally:
            call.cancel()

    return first.stat, data()


class _Feed:
    """The CopyIn request stream: one header chunk, then the tar.  gRPC reads it on a thread
    of its own, so a local error (an unreadable file) is kept to be raised afterwards."""

    def __init__(self, header: pb.TarChunk, pieces: Iterator[bytes]) -> None:
        self.header = header
        self.pieces = pieces
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def __iter__(self) -> Iterator[pb.TarChunk]:
        yield self.header
        try:
            for piece in self.pieces:
                yield pb.TarChunk(data=piece)
        except BaseException as e:
            with self.lock:
                self.error = e
            raise


def _copy_in_call(client: Client, feed: _Feed) -> None:
    method = client._channel.stream_unary(
        f"/{SERVICE}/CopyIn",
        request_serializer=lambda m: m.encode(),
        response_deserializer=pb.Empty.decode,
    )
    try:
        method(iter(feed))
    except client._grpc.RpcError as e:
        with feed.lock:
            local = feed.error
        if isinstance(local, KettleError):
            raise local from None
        if isinstance(local, OSError):
            raise _local_error(local) from None
        raise client._error(e) from None


def _local_error(e: OSError) -> KettleError:
    where = e.filename if isinstance(e.filename, str) else None
    return SyscallError("copy", e.errno or 5, where)


# --- container -> host ------------------------------------------------------------------------


def _copy_out(client: Client, src: _Arg, dest: str, archive: bool, follow: bool) -> None:
    path = src.path
    rebase = ""
    if follow:
        st = _stat(client, src.container, path)
        if st is not None and stat.S_ISLNK(st.mode):
            target = st.link_target
            if not target.startswith("/"):
                target = posixpath.join(_parent(path), target)
            path, rebase = _rebase_name(path, target)
    st, data = _open_archive(client, src.container, path)
    if dest == "-":
        out = sys.stdout.buffer
        for piece in data:
            out.write(piece)
        out.flush()
        return
    from kettle.daemon.copy_tar import extract_tar
    from kettle.daemon.copy_tar import rebase as rebase_fn

    src_is_dir = stat.S_ISDIR(st.mode)
    top = _base(path)  # the name kettled gives the archive's top entry
    name = rebase or top
    dest_dir, new = _destination(dest, name, src_is_dir)
    rename = None if new == top else rebase_fn(top, new)
    fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        owner = None if archive else (os.geteuid(), os.getegid())
        extract_tar(_Reader(data), fd, f"copy to {dest}", owner=owner, rename=rename)
    finally:
        os.close(fd)
        data.close()


def _destination(dest: str, name: str, src_is_dir: bool) -> tuple[str, str]:
    """docker's CopyInfoDestinationPath + PrepareArchiveCopy on the host: (the directory to
    unpack into, the name the archive's top entry must have there)."""
    path = os.path.abspath(dest) + ("/" if _trailing_sep(dest) else "")
    if _current_dir(dest):
        path = path.rstrip("/") + "/."
    try:
        st: os.stat_result | None = os.stat(path)  # a symlink on the host is the user's own
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise InvalidArgument(f"destination {dest} is not a directory") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        return path, name
    if st is not None:
        if src_is_dir:
            raise InvalidArgument(f"cannot copy a directory to file {dest}")
        if _trailing_sep(dest):
            raise InvalidArgument(f"destination {dest} is not a directory")
        return _parent(path), _base(path)
    parent = _parent(path)
    if not os.path.isdir(parent):
        raise NotFound(f"destination directory {parent} does not exist")
    if not src_is_dir and (_trailing_sep(dest) or _current_dir(dest)):
        raise NotFound(f"destination directory {dest} does not exist")
    return parent, _base(path)


class _Reader:
    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces
        self.buf = memoryview(b"")

    def read(self, n: int, /) -> bytes:
        while not self.buf:
            nxt = next(self.pieces, None)
            if nxt is None:
                return b""
            self.buf = memoryview(nxt)
        out = bytes(self.buf[:n])
        self.buf = self.buf[n:]
        return out


# --- host -> container ------------------------------------------------------------------------


def _stdin_pieces() -> Iterator[bytes]:
    inp = sys.stdin.buffer
    while piece := inp.read(_STDIO_CHUNK):
        yield piece


def _copy_in(client: Client, src: str, dest: _Arg, archive: bool, follow: bool) -> None:
    cid = dest.container
    dpath = dest.path or "/"
    st = _stat(client, cid, dpath)
    if st is not None and stat.S_ISLNK(st.mode):
        target = st.link_target
        if not target.startswith("/"):
            target = posixpath.join(_parent(dpath), target)
        dpath = target
        st = _stat(client, cid, dpath)
    if st is not None and not (stat.S_ISDIR(st.mode) or stat.S_ISREG(st.mode)):
        raise InvalidArgument(
            f"destination {cid}:{dest.path} must be a directory or a regular file"
        )
    dest_is_dir = st is not None and stat.S_ISDIR(st.mode)
    if src == "-":
        if not dest_is_dir:
            raise InvalidArgument(f"destination {cid}:{dest.path} must be a directory")
        header = pb.TarChunk(id=cid, path=dpath, keep_ownership=archive)
        _copy_in_call(client, _Feed(header, _stdin_pieces()))
        return
    from kettle.daemon.copy_tar import tar_stream

    local, top = _source(src, follow)
    src_is_dir = os.path.isdir(local) if follow else _lstat_is_dir(local)
    if st is None:
        if not src_is_dir and (_trailing_sep(dpath) or _current_dir(dpath)):
            raise NotFound(f"destination directory {cid}:{dest.path} does not exist")
        where, name = _parent(dpath), _base(dpath)
    elif dest_is_dir:
        where, name = dpath, top
    elif src_is_dir:
        raise InvalidArgument(f"cannot copy a directory to file {cid}:{dest.path}")
    else:
        where, name = _parent(dpath), _base(dpath)
    parent = os.path.dirname(local.rstrip("/")) if top != "." else local
    base = os.path.basename(local.rstrip("/")) if top != "." else "."
    pfd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pieces = tar_stream(pfd, base, name)
        header = pb.TarChunk(id=cid, path=where, keep_ownership=archive)
        try:
            _copy_in_call(client, _Feed(header, pieces))
        finally:
            _close(pieces)
    finally:
        os.close(pfd)


def _close(pieces: Iterator[bytes]) -> None:
    """Stop the archive's writer thread, unless gRPC's request thread is still inside it
    (after a failed call): kctl is about to exit, and its threads with it."""
    close = getattr(pieces, "close", None)
    if close is None:
        return
    try:
        close()
    except ValueError:
        pass  # "generator already executing"


def _lstat_is_dir(path: str) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


def _source(src: str, follow: bool) -> tuple[str, str]:
    """docker's CopyInfoSourcePath: (the host path to archive, the name its entries take)."""
    path = os.path.abspath(src) + ("/" if _trailing_sep(src) else "")
    if _current_dir(src):
        path = path.rstrip("/") + "/."
    if follow or _trailing_sep(src) or _current_dir(src):
        resolved = os.path.realpath(path)
        resolved, rebase = _rebase_name(path, resolved)
    else:
        # The parent's symlinks are followed, the last component is copied as it is.
        resolved = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        rebase = ""
    if not os.path.lexists(resolved.rstrip("/") if not _current_dir(resolved) else resolved):
        raise NotFound(f"could not find the file {src} on the host")
    top = rebase or _base(resolved)
    local = resolved.rstrip("/") if not _current_dir(resolved) else resolved[:-2] or "/"
    return local, top
