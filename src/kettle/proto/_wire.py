"""A small proto3 encoder/decoder driven by per-class field tables.

The generated modules (`*_pb.py`) declare one class per message with a `FIELDS` table; this
module turns instances into wire bytes and back.  It exists instead of the `protobuf` package
because a containerd shim lives once per container and must stay tiny: importing protobuf's
upb backend plus the task protos costs about 6.7 MiB RSS and 30 ms here, this codec and all of
Kettle's messages well under 1 MiB (numbers in docs/ttrpc.md).

Only what containerd's APIs use is supported: varint scalars (int32, int64, uint32, uint64, bool,
enum), string, bytes, messages, repeated fields (scalars packed) and map<string, string>.  The
decoder follows proto3 rules: unknown fields and fields with an unexpected wire type are skipped
(newer containerd versions add fields), repeated occurrences of a singular message are merged,
the last occurrence of a singular scalar wins, and scalars accept packed and unpacked forms.
"""

from __future__ import annotations

from kettle.errors import InvalidArgument

# typing costs ~8 ms and 1 MiB to import (it pulls in re); annotations are strings here, so
# only the type checker needs it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import ClassVar, TypeVar

    M = TypeVar("M", bound="Message")
    T = TypeVar("T")

# Field kinds.  Numbers are private to this module and the generated code.
INT32 = 1
INT64 = 2
UINT32 = 3
UINT64 = 4
BOOL = 5
ENUM = 6
STRING = 7
BYTES = 8
MESSAGE = 9

# Field labels.
SINGULAR = 0
REPEATED = 1
MAP = 2  # map<string, string>: a repeated entry message {1: key, 2: value}

_VARINT_KINDS = frozenset((INT32, INT64, UINT32, UINT64, BOOL, ENUM))
_WT_VARINT = 0
_WT_I64 = 1
_WT_LEN = 2
_WT_I32 = 5

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

_RANGES: dict[int, tuple[int, int]] = {
    INT32: (-(1 << 31), (1 << 31) - 1),
    ENUM: (-(1 << 31), (1 << 31) - 1),
    INT64: (-(1 << 63), (1 << 63) - 1),
    UINT32: (0, _U32),
    UINT64: (0, _U64),
}


class DecodeError(InvalidArgument):
    """Bytes that are not a valid encoding of the expected message."""


class Field:
    """One entry of a message's field table."""

    __slots__ = ("kind", "label", "message_type", "name", "number", "tag")

    def __init__(
        self,
        number: int,
        name: str,
        kind: int,
        label: int = SINGULAR,
        message_type: type[Message] | None = None,
    ) -> None:
        self.number = number
        self.name = name
        self.kind = kind
        self.label = label
        self.message_type = message_type
        packed = label == REPEATED and kind in _VARINT_KINDS
        wire = _WT_VARINT if kind in _VARINT_KINDS and not packed else _WT_LEN
        self.tag = _varint_bytes((number << 3) | wire)


class Message:
    """Base of every generated message class."""

    __slots__ = ()

    #: Fully qualified proto name, e.g. "containerd.task.v2.CreateTaskRequest".
    FULL_NAME: ClassVar[str] = ""
    #: Field table, in field-number order; set by the generated module.
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    _BY_NUMBER: ClassVar[dict[int, Field]]

    def encode(self) -> bytes:
        out = bytearray()
        _encode_into(self, out)
        return bytes(out)

    @classmethod
    def decode(cls: type[M], data: bytes | bytearray | memoryview) -> M:
        obj = cls()
        view = memoryview(data)
        _merge(obj, view if view.format == "B" else view.cast("B"))
        return obj

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like protobuf's messages

    def __repr__(self) -> str:
        parts = []
        for f in self.FIELDS:
            value = getattr(self, f.name)
            if value or (f.kind == MESSAGE and f.label == SINGULAR and value is not None):
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    _put_varint(out, value)
    return bytes(out)


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        # Negative int32/int64 travel as 10-byte two's complement, as protobuf requires.
        value &= _U64
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _check_int(msg: Message, f: Field, value: object) -> int:
    if f.kind == BOOL:
        if not isinstance(value, bool):
            raise InvalidArgument(f"{msg.FULL_NAME}.{f.name}: expected bool, got {value!r}")
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{msg.FULL_NAME}.{f.name}: expected int, got {value!r}")
    low, high = _RANGES[f.kind]
    if not low <= value <= high:
        raise InvalidArgument(f"{msg.FULL_NAME}.{f.name}: {value} out of range")
    return value


def _put_bytes(out: bytearray, tag: bytes, data: bytes) -> None:
    out += tag
    _put_varint(out, len(data))
    out += data


def _text(msg: Message, f: Field, value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"{msg.FULL_NAME}.{f.name}: expected str, got {value!r}")
    return value.encode()


def _blob(msg: Message, f: Field, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgument(f"{msg.FULL_NAME}.{f.name}: expected bytes, got {value!r}")
    return bytes(value)


def _sub(msg: Message, f: Field, value: object) -> bytes:
    if not isinstance(value, f.message_type or Message):
        raise InvalidArgument(
            f"{msg.FULL_NAME}.{f.name}: expected {f.message_type}, got {type(value).__name__}"
        )
    out = bytearray()
    _encode_into(value, out)
    return bytes(out)


def _encode_into(msg: Message, out: bytearray) -> None:
    for f in msg.FIELDS:
        value = getattr(msg, f.name)
        kind = f.kind
        if f.label == SINGULAR:
            if kind in _VARINT_KINDS:
                if value:
                    out += f.tag
                    _put_varint(out, _check_int(msg, f, value))
                elif value is not False and value != 0:
                    _check_int(msg, f, value)  # reject None and wrong types
            elif kind == STRING:
                if value:
                    _put_bytes(out, f.tag, _text(msg, f, value))
                elif value != "":
                    _text(msg, f, value)
            elif kind == BYTES:
                if value:
                    _put_bytes(out, f.tag, _blob(msg, f, value))
                elif value != b"":
                    _blob(msg, f, value)
            elif value is not None:
                _put_bytes(out, f.tag, _sub(msg, f, value))
        elif f.label == REPEATED:
            if not value:
                continue
            if kind in _VARINT_KINDS:
                packed = bytearray()
                for item in value:
                    _put_varint(packed, _check_int(msg, f, item))
                _put_bytes(out, f.tag, bytes(packed))
            elif kind == STRING:
                for item in value:
                    _put_bytes(out, f.tag, _text(msg, f, item))
            elif kind == BYTES:
                for item in value:
                    _put_bytes(out, f.tag, _blob(msg, f, item))
            else:
                for item in value:
                    _put_bytes(out, f.tag, _sub(msg, f, item))
        else:
            # Sorted keys make the encoding deterministic (what Go's and protobuf's
            # deterministic marshalling do); key and value are always written.
            for key in sorted(value):
                entry = bytearray()
                _put_bytes(entry, b"\x0a", _text(msg, f, key))
                _put_bytes(entry, b"\x12", _text(msg, f, value[key]))
                _put_bytes(out, f.tag, bytes(entry))


def _get_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


def _convert(kind: int, raw: int) -> int | bool:
    if kind == UINT64:
        return raw
    if kind == UINT32:
        return raw & _U32
    if kind == BOOL:
        return raw != 0
    if kind == INT64:
        return raw - (1 << 64) if raw >> 63 else raw
    raw &= _U32  # int32 and enum: the low 32 bits, signed
    return raw - (1 << 32) if raw >> 31 else raw


def _index(cls: type[Message]) -> dict[int, Field]:
    try:
        return cls.__dict__["_BY_NUMBER"]  # type: ignore[no-any-return]
    except KeyError:
        table = {f.number: f for f in cls.FIELDS}
        cls._BY_NUMBER = table
        return table


def _merge(msg: Message, buf: memoryview) -> None:
    fields = _index(type(msg))
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _get_varint(buf, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0:
            raise DecodeError(f"{msg.FULL_NAME}: field number 0")
        if wire == _WT_VARINT:
            raw, pos = _get_varint(buf, pos, end)
            f = fields.get(number)
            if f is not None and f.kind in _VARINT_KINDS:
                value = _convert(f.kind, raw)
                if f.label == REPEATED:
                    getattr(msg, f.name).append(value)
                else:
                    setattr(msg, f.name, value)
            continue
        if wire == _WT_LEN:
            length, pos = _get_varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise DecodeError(f"{msg.FULL_NAME}: field {number} runs past the end")
            f = fields.get(number)
            if f is not None:
                _merge_len(msg, f, buf[pos:stop])
            pos = stop
            continue
        if wire == _WT_I64:
            pos += 8
        elif wire == _WT_I32:
            pos += 4
        else:
            raise DecodeError(f"{msg.FULL_NAME}: unsupported wire type {wire} (field {number})")
        if pos > end:
            raise DecodeError(f"{msg.FULL_NAME}: field {number} runs past the end")


def _string(msg: Message, f: Field, data: memoryview) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{msg.FULL_NAME}.{f.name}: invalid utf-8") from exc


def _merge_len(msg: Message, f: Field, data: memoryview) -> None:
    kind = f.kind
    if f.label == MAP:
        entry = _MapEntry()
        _merge(entry, data)
        getattr(msg, f.name)[entry.key] = entry.value
    elif kind in _VARINT_KINDS:
        if f.label != REPEATED:
            return  # a length-delimited value for a singular scalar: not ours, skip
        items = getattr(msg, f.name)
        pos = 0
        end = len(data)
        while pos < end:
            raw, pos = _get_varint(data, pos, end)
            items.append(_convert(kind, raw))
    elif kind == STRING:
        text = _string(msg, f, data)
        if f.label == REPEATED:
            getattr(msg, f.name).append(text)
        else:
            setattr(msg, f.name, text)
    elif kind == BYTES:
        if f.label == REPEATED:
            getattr(msg, f.name).append(bytes(data))
        else:
            setattr(msg, f.name, bytes(data))
    else:
        assert f.message_type is not None
        if f.label == REPEATED:
            sub = f.message_type()
            _merge(sub, data)
            getattr(msg, f.name).append(sub)
        else:
            current = getattr(msg, f.name)
            if current is None:
                current = f.message_type()
                setattr(msg, f.name, current)
            _merge(current, data)


class _MapEntry(Message):
    __slots__ = ("key", "value")
    FULL_NAME = "kettle.proto.MapEntry"

    def __init__(self) -> None:
        self.key = ""
        self.value = ""


_MapEntry.FIELDS = (Field(1, "key", STRING), Field(2, "value", STRING))


def new_list(items: Iterable[T] | None) -> list[T]:
    """A fresh list for a repeated field (generated __init__ helper)."""
    return [] if items is None else list(items)


class Service:
    """A ttrpc service as declared in a .proto file: its full name and unary methods."""

    __slots__ = ("methods", "name")

    def __init__(self, name: str, methods: dict[str, tuple[type[Message], type[Message]]]) -> None:
        self.name = name
        #: method name -> (request type, response type)
        self.methods = methods

    def __repr__(self) -> str:
        return f"Service({self.name!r})"
