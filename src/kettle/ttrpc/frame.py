"""ttrpc framing: a 10-byte big-endian header (length u32, stream id u32, type u8, flags u8)
followed by `length` payload bytes, at most 4 MiB."""

from __future__ import annotations

import struct

from kettle.errors import ResourceExhausted

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE_SIZE = 4 << 20

TYPE_REQUEST = 0x01
TYPE_RESPONSE = 0x02
TYPE_DATA = 0x03  # streaming (ttrpc >= 1.2); containerd's shim API never uses it

FLAG_REMOTE_CLOSED = 0x01
FLAG_REMOTE_OPEN = 0x02
FLAG_NO_DATA = 0x04

_RECV_CHUNK = 1 << 16


def oversize_message(length: int) -> str:
    # Same words as Go ttrpc, which containerd may log or match.
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE_SIZE}"


def encode_frame(stream_id: int, mtype: int, payload: bytes, flags: int = 0) -> bytes:
    """Header plus payload; refuses payloads over the limit instead of sending them."""
    if len(payload) > MAX_MESSAGE_SIZE:
        raise ResourceExhausted(oversize_message(len(payload)))
    return HEADER.pack(len(payload), stream_id, mtype, flags) + payload


class Frame:
    """One received frame.  `oversize` is the announced length of a frame that exceeded the
    limit; its payload was discarded (and is empty here)."""

    __slots__ = ("flags", "oversize", "payload", "stream_id", "type")

    def __init__(
        self, stream_id: int, mtype: int, flags: int, payload: bytes, oversize: int = 0
    ) -> None:
        self.stream_id = stream_id
        self.type = mtype
        self.flags = flags
        self.payload = payload
        self.oversize = oversize

    def __repr__(self) -> str:
        size = f"oversize={self.oversize}" if self.oversize else f"len={len(self.payload)}"
        return f"Frame(stream={self.stream_id}, type={self.type}, flags={self.flags}, {size})"


class FrameParser:
    """Incremental parser: feed it whatever recv() returned, get the complete frames.

    An oversized frame is reported as soon as its header arrives and its payload is skipped
    as it streams in, so one bad message does not cost the connection (Go ttrpc does the same).
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._max = max_size
        self._buf = bytearray()
        self._discard = 0

    @property
    def pending(self) -> int:
        """Bytes held or still to be skipped: non-zero means a frame is incomplete."""
        return len(self._buf) + self._discard

    def feed(self, data: bytes) -> list[Frame]:
        if self._discard:
            skip = min(self._discard, len(data))
            self._discard -= skip
            data = data[skip:]
        self._buf += data
        buf = self._buf
        frames: list[Frame] = []
        while len(buf) >= HEADER_SIZE:
            length, stream_id, mtype, flags = HEADER.unpack_from(buf)
            if length > self._max:
                frames.append(Frame(stream_id, mtype, flags, b"", oversize=length))
                drop = min(len(buf) - HEADER_SIZE, length)
                del buf[: HEADER_SIZE + drop]
                self._discard = length - drop
                continue
            end = HEADER_SIZE + length
            if len(buf) < end:
                break
            frames.append(Frame(stream_id, mtype, flags, bytes(buf[HEADER_SIZE:end])))
            del buf[:end]
        return frames
