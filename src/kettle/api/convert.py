"""kettle.v1 messages to and from plain JSON-able dicts (kept in SQLite, shown by inspect)."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

from kettle.proto._wire import BYTES, MAP, MESSAGE, REPEATED, Message

M = TypeVar("M", bound=Message)


def to_dict(msg: Message) -> dict[str, Any]:
    """Every field, defaults included; bytes as base64."""
    out: dict[str, Any] = {}
    for f in msg.FIELDS:
        value = getattr(msg, f.name)
        if f.label == MAP:
            out[f.name] = dict(value)
        elif f.kind == MESSAGE:
            if f.label == REPEATED:
                out[f.name] = [to_dict(v) for v in value]
            else:
                out[f.name] = None if value is None else to_dict(value)
        elif f.kind == BYTES:
            out[f.name] = (
                [base64.b64encode(v).decode() for v in value]
                if f.label == REPEATED
                else base64.b64encode(value).decode()
            )
        else:
            out[f.name] = list(value) if f.label == REPEATED else value
    return out


def from_dict(cls: type[M], data: dict[str, Any]) -> M:
    """The inverse of to_dict; unknown keys are ignored (a newer kettled wrote them)."""
    msg = cls()
    for f in cls.FIELDS:
        if f.name not in data:
            continue
        value = data[f.name]
        if f.label == MAP:
            setattr(msg, f.name, {str(k): str(v) for k, v in value.items()})
        elif f.kind == MESSAGE:
            sub = f.message_type
            if f.label == REPEATED:
                assert sub is not None
                setattr(msg, f.name, [from_dict(sub, v) for v in value])
            elif value is not None:
                assert sub is not None
                setattr(msg, f.name, from_dict(sub, value))
        elif f.kind == BYTES:
            if f.label == REPEATED:
                setattr(msg, f.name, [base64.b64decode(v) for v in value])
            else:
                setattr(msg, f.name, base64.b64decode(value))
        else:
            setattr(msg, f.name, list(value) if f.label == REPEATED else value)
    return msg
