"""The content store: blobs addressed by digest under <root>/blobs/<alg>/<hex>.

A blob appears only after its bytes were verified against digest and size, fsync'ed and renamed
into place, so a blob file is always complete.  Downloads in progress live under
<root>/ingest/<alg>-<hex>/ (a ``data`` file and a ``lock``), which lets a later pull resume a
dropped download where it stopped.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from typing import BinaryIO

from kettle.errors import InvalidArgument, NotFound, ResourceExhausted, SyscallError
from kettle.image.digest import hasher, validate_digest


def _no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Ingest:
    """A download being written; a partial one survives for a later resume unless discarded."""

    def __init__(self, store: ContentStore, digest: str, size: int) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        alg, hexd = validate_digest(digest)
        self.dir = os.path.join(store.root, "ingest", f"{alg}-{hexd}")
        self._lock_fd = self._lock()
        self.data_path = os.path.join(self.dir, "data")
        self._fd = -1
        self.offset = 0
        self.hash = hasher(digest)
        self.closed = False

    def _lock(self) -> int:
        lock = os.path.join(self.dir, "lock")
        while True:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # Blocks while another pull (thread or process) writes the same blob.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            # The holder finished and removed the directory: lock the new one.
            os.close(fd)

    def open(self) -> int:
        """Open the partial file for appending; returns how many bytes it already has."""
        self._fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        end = os.lseek(self._fd, 0, os.SEEK_END)
        if end > self.size:
            os.ftruncate(self._fd, 0)
            end = os.lseek(self._fd, 0, os.SEEK_END)
        self.offset = end
        return end

    def replay(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The bytes already on disk, hashed as they go by (a resumed download starts here)."""
        pos = 0
        while pos < self.offset:
            data = os.pread(self._fd, min(chunk, self.offset - pos), pos)
            if not data:
                raise InvalidArgument(f"blob {self.digest}: partial download shrank")
            self.hash.update(data)
            pos += len(data)
            yield data

    def write(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            if _no_space(exc):
                raise ResourceExhausted(
                    f"blob {self.digest}: no space left on the store's file system"
                ) from None
            raise SyscallError("write", exc.errno or errno.EIO, self.data_path) from None
        self.offset += len(data)
        if self.offset > self.size:
            raise InvalidArgument(f"blob {self.digest}: more than the {self.size} bytes announced")

    def commit(self) -> str:
        """Verify size and digest, fsync and move into place; returns the blob's path."""
        if self.offset != self.size:
            raise InvalidArgument(
                f"blob {self.digest}: got {self.offset} bytes, expected {self.size}"
            )
        got = f"{self.digest.split(':')[0]}:{self.hash.hexdigest()}"
        if got != self.digest:
            self.discard()
            raise InvalidArgument(f"blob {self.digest}: content has digest {got}; rejected")
        try:
            os.fsync(self._fd)
            path = self.store.path(self.digest)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.rename(self.data_path, path)
            self.store.sync_dir(os.path.dirname(path))
        except OSError as exc:
            if _no_space(exc):
                raise ResourceExhausted(f"blob {self.digest}: no space left on the store") from None
            raise SyscallError("commit", exc.errno or errno.EIO, self.data_path) from None
        self.close(remove=True)
        return path

    def discard(self) -> None:
        """Drop the partial download (it was bad, or there is no room for it)."""
        if self.closed:
            return  # the lock is gone: the file may be another writer's now
        try:
            os.unlink(self.data_path)
        except FileNotFoundError:
            pass
        self.offset = 0

    def close(self, remove: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove or not os.path.exists(self.data_path):
            shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)


class ContentStore:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        os.makedirs(os.path.join(root, "ingest"), exist_ok=True)

    def path(self, digest: str) -> str:
        alg, hexd = validate_digest(digest)
        return os.path.join(self.root, "blobs", alg, hexd)

    def size(self, digest: str) -> int | None:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            return None

    def has(self, digest: str, size: int | None = None) -> bool:
        got = self.size(digest)
        return got is not None and (size is None or got == size)

    def read(self, digest: str, limit: int = 4 << 20) -> bytes:
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in the content store") from None
        if len(data) > limit:
            raise InvalidArgument(f"blob {digest}: larger than {limit} bytes")
        return data

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not in the content store") from None

    def write(self, digest: str, data: bytes) -> None:
        """Store a small blob held in memory, verified, atomically."""
        if self.has(digest, len(data)):
            return
        ing = self.ingest(digest, len(data))
        try:
            ing.open()
            if ing.offset:
                os.ftruncate(ing._fd, 0)
                os.lseek(ing._fd, 0, os.SEEK_SET)
                ing.offset = 0
            ing.write(data)
            ing.commit()
        finally:
            ing.close()

    def write_stream(self, src: BinaryIO, size: int) -> str:
        """Store ``size`` bytes read from src, digest unknown beforehand; returns the digest."""
        import hashlib
        import tempfile

        d = os.path.join(self.root, "ingest")
        fd, tmp = tempfile.mkstemp(prefix="stream-", dir=d)
        h = hashlib.sha256()
        try:
            left = size
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise InvalidArgument(f"stream ended {left} bytes early")
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                left -= len(chunk)
            os.fsync(fd)
            digest = "sha256:" + h.hexdigest()
            path = self.path(digest)
            os.rename(tmp, path)
            self.sync_dir(os.path.dirname(path))
            return digest
        except OSError as exc:
            if _no_space(exc):
                raise ResourceExhausted("content store: no space left") from None
            raise SyscallError("write", exc.errno or errno.EIO, tmp) from None
        finally:
            os.close(fd)
            if os.path.exists(tmp):
                os.unlink(tmp)

    def ingest(self, digest: str, size: int) -> Ingest:
        return Ingest(self, digest, size)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def list(self) -> Iterator[tuple[str, int]]:
        base = os.path.join(self.root, "blobs")
        for alg in sorted(os.listdir(base)):
            for hexd in sorted(os.listdir(os.path.join(base, alg))):
                try:
                    size = os.stat(os.path.join(base, alg, hexd)).st_size
                except FileNotFoundError:
                    continue
                yield f"{alg}:{hexd}", size

    def verify(self, digest: str) -> bool:
        h = hasher(digest)
        with self.open(digest) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return f"{digest.split(':')[0]}:{h.hexdigest()}" == digest

    def clean_ingests(self, older_than: float = 0.0) -> int:
        """Remove partial downloads nobody is writing (and older than ``older_than`` seconds)."""
        removed = 0
        base = os.path.join(self.root, "ingest")
        now = time.time()
        for name in os.listdir(base):
            d = os.path.join(base, name)
            try:
                fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                shutil.rmtree(d, ignore_errors=True)
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a pull is writing it
                try:
                    mtime = os.stat(os.path.join(d, "data")).st_mtime
                except FileNotFoundError:
                    mtime = 0.0
                if now - mtime >= older_than:
                    shutil.rmtree(d, ignore_errors=True)
                    removed += 1
            finally:
                os.close(fd)
        return removed
