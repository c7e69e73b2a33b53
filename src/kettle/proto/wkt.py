"""Helpers for the well-known types containerd uses: Any and Timestamp."""

from __future__ import annotations

import time

from kettle.errors import InvalidArgument
from kettle.proto._wire import Message
from kettle.proto.any_pb import Any
from kettle.proto.timestamp_pb import Timestamp

# typing only for the type checker: importing it costs every shim start ~7 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    M = TypeVar("M", bound=Message)

_NS = 1_000_000_000


def pack_any(msg: Message, type_url: str | None = None) -> Any:
    """Wrap msg in an Any.  containerd's type URLs are the bare full name (no
    `type.googleapis.com/` prefix), which is the default here."""
    return Any(type_url=msg.FULL_NAME if type_url is None else type_url, value=msg.encode())


def any_name(value: Any) -> str:
    """The message name an Any carries, with any `host/` prefix removed."""
    return value.type_url.rsplit("/", 1)[-1]


def unpack_any(value: Any, cls: type[M]) -> M:
    """Decode the message inside an Any, checking that it is a cls."""
    if any_name(value) != cls.FULL_NAME:
        raise InvalidArgument(f"any: type url {value.type_url!r} is not {cls.FULL_NAME}")
    return cls.decode(value.value)


def timestamp_from_ns(ns: int) -> Timestamp:
    seconds, nanos = divmod(ns, _NS)
    return Timestamp(seconds=seconds, nanos=nanos)


def timestamp_now() -> Timestamp:
    return timestamp_from_ns(time.time_ns())


def timestamp_to_ns(ts: Timestamp | None) -> int:
    """Nanoseconds since the epoch; a missing timestamp is the epoch (Go's zero proto time)."""
    if ts is None:
        return 0
    return ts.seconds * _NS + ts.nanos
