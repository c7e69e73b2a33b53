"""Helpers the verb modules share: positional checks and JSON output."""

from __future__ import annotations

import sys

from kettle.errors import InvalidArgument, oserror_text
from kettle.runtime import jsonio as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def need_id(args: list[str], command: str, extra_ok: bool = False) -> str:
    if not args:
        raise InvalidArgument(f'"{command}" requires a container id as its first argument')
    if len(args) > 1 and not extra_ok:
        raise InvalidArgument(f'"{command}" takes exactly one container id; got {args}')
    return args[0]


def print_json(obj: Any, indent: int | None = None) -> None:
    sys.stdout.write(json.dumps(obj, indent=indent) + "\n")
    sys.stdout.flush()


def read_json_source(source: str, what: str) -> Any:
    """A JSON document from a file path, or stdin for '-'."""
    try:
        if source == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                raw = f.read()
    except OSError as e:
        raise InvalidArgument(f"{what}: cannot read {source}: {oserror_text(e)}") from None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"{what}: malformed json in {source}: {e}") from None
