"""JSON for the runtime's hot path without importing the json package.

`import json` pulls in re and enum, ~5 ms on every kettle-runtime start, while the decoding and
encoding themselves are done by CPython's C accelerator `_json` anyway.  This module drives the
accelerator directly and falls back to the json package where it is missing (another Python
implementation) or when asked for what only the package does (indentation).  Behaviour is the
package's: the tests compare the two on the same documents.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_accel: Any
try:
    import _json as _accel
except ImportError:  # pragma: no cover - not CPython: the json package does the work
    _accel = None

_WHITESPACE = " \t\n\r"


class _Context:
    """The attributes the C scanner reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str]

    def __init__(self) -> None:
        self.memo = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


class JSONError(ValueError):
    """A document that is not valid JSON (a ValueError, like json.JSONDecodeError)."""


def loads(data: str | bytes) -> Any:
    text = data.decode() if isinstance(data, bytes | bytearray) else data
    if _accel is None:
        import json

        return json.loads(text)
    scan = _accel.make_scanner(_Context())
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        obj, end = scan(text, start)
    except StopIteration as e:
        raise JSONError(f"expecting value: char {e.value}") from None
    except ValueError as e:
        raise JSONError(str(e)) from None
    if text[end:].strip(_WHITESPACE):
        raise JSONError(f"extra data: char {end}")
    return obj


def _default(o: object) -> Any:
    raise TypeError(f"object of type {type(o).__name__} is not json serializable")


def dumps(
    obj: Any, indent: int | str | None = None, separators: tuple[str, str] | None = None
) -> str:
    if _accel is None or indent is not None:
        import json

        return json.dumps(obj, indent=indent, separators=separators)
    item_sep, key_sep = separators or (", ", ": ")
    encode = _accel.make_encoder(
        {}, _default, _accel.encode_basestring_ascii, None, key_sep, item_sep, False, False, True
    )
    return "".join(encode(obj, 0))
