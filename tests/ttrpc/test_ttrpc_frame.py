"""Frame header encoding and the incremental frame parser."""

from __future__ import annotations

import pytest

from kettle.errors import ResourceExhausted
from kettle.ttrpc.frame import (
    MAX_MESSAGE_SIZE,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    FrameParser,
    encode_frame,
)


def test_header_is_ten_big_endian_bytes() -> None:
    frame = encode_frame(0x01020305, TYPE_REQUEST, b"abc", flags=0x04)
    assert frame == b"\x00\x00\x00\x03" + b"\x01\x02\x03\x05" + b"\x01" + b"\x04" + b"abc"


def test_max_message_size_is_4_mib() -> None:
    assert MAX_MESSAGE_SIZE == 4194304


def test_encode_refuses_oversized_payload() -> None:
    with pytest.raises(ResourceExhausted, match="exceed maximum message size of 4194304"):
        encode_frame(1, TYPE_REQUEST, bytes(MAX_MESSAGE_SIZE + 1))


def test_encode_accepts_exactly_the_limit() -> None:
    assert len(encode_frame(1, TYPE_REQUEST, bytes(MAX_MESSAGE_SIZE))) == MAX_MESSAGE_SIZE + 10


def test_parser_reassembles_byte_by_byte() -> None:
    data = encode_frame(1, TYPE_REQUEST, b"hello") + encode_frame(3, TYPE_RESPONSE, b"")
    parser = FrameParser()
    frames = []
    for i in range(len(data)):
        frames += parser.feed(data[i : i + 1])
    assert [(f.stream_id, f.type, f.payload) for f in frames] == [
        (1, TYPE_REQUEST, b"hello"),
        (3, TYPE_RESPONSE, b""),
    ]
    assert parser.pending == 0


def test_parser_returns_several_frames_from_one_chunk() -> None:
    data = b"".join(encode_frame(n, TYPE_REQUEST, bytes([n]) * n) for n in (1, 3, 5))
    frames = FrameParser().feed(data)
    assert [(f.stream_id, f.payload) for f in frames] == [
        (1, b"\x01"),
        (3, b"\x03" * 3),
        (5, b"\x05" * 5),
    ]


def test_parser_keeps_incomplete_frame() -> None:
    parser = FrameParser()
    data = encode_frame(7, TYPE_REQUEST, b"payload")
    assert parser.feed(data[:12]) == []
    assert parser.pending == 12
    (frame,) = parser.feed(data[12:])
    assert frame.payload == b"payload"


def test_parser_skips_oversized_frame_and_keeps_going() -> None:
    parser = FrameParser(max_size=8)
    big = b"\x00\x00\x00\x20" + b"\x00\x00\x00\x09" + b"\x01\x00" + b"x" * 0x20
    good = encode_frame(11, TYPE_REQUEST, b"ok")
    data = big + good
    frames = []
    # The oversized body arrives in pieces, across the boundary to the next frame.
    for start in range(0, len(data), 5):
        frames += parser.feed(data[start : start + 5])
    assert [(f.stream_id, f.oversize, f.payload) for f in frames] == [
        (9, 0x20, b""),
        (11, 0, b"ok"),
    ]
    assert parser.pending == 0


def test_parser_reports_oversize_as_soon_as_the_header_arrives() -> None:
    parser = FrameParser()
    header = (MAX_MESSAGE_SIZE + 1).to_bytes(4, "big") + b"\x00\x00\x00\x01\x01\x00"
    (frame,) = parser.feed(header)
    assert frame.oversize == MAX_MESSAGE_SIZE + 1
    assert parser.pending == MAX_MESSAGE_SIZE + 1
