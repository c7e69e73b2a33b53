"""Streaming decompression of layers: gzip (multi-member), zstd (multi-frame) or none.

Each reader pulls compressed bytes from a source on demand and never holds more than about one
output chunk, so a decompression bomb costs no memory: its size is bounded by the unpacker.
zlib and zstandard release the GIL while they work, which is what lets layers unpack in parallel
threads.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol, cast

from kettle.errors import InvalidArgument

_IN = 1 << 20


class Source(Protocol):
    def read(self, n: int, /) -> bytes: ...


class _Gzip:
    def __init__(self, src: Source, what: str) -> None:
        self.src = src
        self.what = what
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.tail = b""
        self.done = False
        self.members = 0
        self.in_member = False

    def read(self, n: int) -> bytes:
        while not self.done:
            data, self.tail = (self.tail or self.src.read(_IN)), b""
            if not data:
                if self.in_member or self.members == 0:
                    raise InvalidArgument(f"{self.what}: gzip stream ends early")
                self.done = True
                break
            if not self.in_member and self.members and not data.strip(b"\0"):
                continue  # zero padding after the last member, tolerated like gzip(1) does
            try:
                out = self.d.decompress(data, n)
            except zlib.error as exc:
                raise InvalidArgument(f"{self.what}: corrupt gzip stream ({exc})") from None
            self.in_member = True
            if self.d.eof:
                # Concatenated members (pigz, appended layers) continue the same stream.
                self.members += 1
                self.in_member = False
                self.tail = self.d.unused_data
                self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                self.tail = self.d.unconsumed_tail
            if out:
                return out
        return b""


class _Zstd:
    def __init__(self, src: Source, what: str) -> None:
        import zstandard  # third party and only needed for zstd layers

        self.what = what
        self._error = zstandard.ZstdError
        self.reader = zstandard.ZstdDecompressor().stream_reader(
            cast(Any, src), read_size=_IN, read_across_frames=True, closefd=False
        )

    def read(self, n: int) -> bytes:
        try:
            return bytes(self.reader.read(n))
        except self._error as exc:
            raise InvalidArgument(f"{self.what}: corrupt zstd stream ({exc})") from None


class _Plain:
    def __init__(self, src: Source) -> None:
        self.src = src

    def read(self, n: int) -> bytes:
        return self.src.read(n)


def decompressor(src: Source, compression: str, what: str) -> Source:
    """A reader of the uncompressed bytes of ``src``."""
    if compression == "gzip":
        return _Gzip(src, what)
    if compression == "zstd":
        return _Zstd(src, what)
    if compression == "":
        return _Plain(src)
    raise InvalidArgument(f"{what}: unsupported compression {compression!r}")


def sniff(head: bytes) -> str:
    """Compression of a stream from its first bytes (for archives that do not say)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return ""
