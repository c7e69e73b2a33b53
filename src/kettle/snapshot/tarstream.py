"""A forward-only, hashing, size-bounded byte stream that tarfile can parse headers from.

tarfile is used only to decode headers (ustar, pax, GNU long names, sparse maps); file data is
copied by the unpacker straight from this stream, and nothing is ever extracted by tarfile.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from kettle.errors import InvalidArgument, ResourceExhausted

CHUNK = 1 << 20
#: a single header read (pax records, GNU long names) larger than this is refused at once.
MAX_HEADER_READ = 4 << 20


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class TarStream:
    """Wraps the decompressed layer: counts, hashes (diff id) and bounds what passes through."""

    def __init__(self, source: Readable, what: str, max_size: int) -> None:
        self._src = source
        self._what = what
        self._max = max_size
        self._buf = b""
        self._pos = 0
        self._consumed = 0  # bytes handed out (tell())
        self.total = 0  # bytes read from source
        self.hash = hashlib.sha256()
        self._eof = False
        self._head = b""

    # --- the file-like surface tarfile needs --------------------------------------------------

    def tell(self) -> int:
        return self._consumed

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._consumed:
            raise InvalidArgument(f"{self._what}: tar stream cannot seek backwards")
        self.skip(pos - self._consumed)
        return self._consumed

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > MAX_HEADER_READ:
            raise InvalidArgument(
                f"{self._what}: tar header of {n} bytes is too large (limit {MAX_HEADER_READ})"
            )
        parts: list[bytes] = []
        while n > 0:
            if self._pos == len(self._buf) and not self._fill():
                break
            take = min(n, len(self._buf) - self._pos)
            parts.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            self._consumed += take
            n -= take
        return b"".join(parts)

    # --- data copying ---------------------------------------------------------------------

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._src.read(CHUNK)
        if not chunk:
            self._eof = True
            return False
        self.hash.update(chunk)
        if self.total < 1024:
            self._head += bytes(chunk[: 1024 - self.total])
        self.total += len(chunk)
        if self.total > self._max:
            raise ResourceExhausted(
                f"{self._what}: unpacked size exceeds the limit of {self._max} bytes"
            )
        self._buf = chunk
        self._pos = 0
        return True

    def chunks(self, n: int) -> list[memoryview]:
        """Up to n bytes as views into the buffer (at least one byte unless at end of stream)."""
        if self._pos == len(self._buf) and not self._fill():
            return []
        take = min(n, len(self._buf) - self._pos)
        view = memoryview(self._buf)[self._pos : self._pos + take]
        self._pos += take
        self._consumed += take
        return [view]

    def skip(self, n: int) -> None:
        while n > 0:
            got = self.chunks(n)
            if not got:
                raise InvalidArgument(f"{self._what}: tar stream ends early")
            n -= len(got[0])

    def drain(self) -> None:
        """Read to the end so the diff id covers every byte (tar padding after the end marker)."""
        self._consumed += len(self._buf) - self._pos
        self._pos = len(self._buf)
        while self._fill():
            self._consumed += len(self._buf)
            self._pos = len(self._buf)

    @property
    def all_zero(self) -> bool:
        """Whether the stream so far starts with nothing but zero bytes (an empty archive)."""
        return not self._head.strip(b"\0")

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.hash.hexdigest()
