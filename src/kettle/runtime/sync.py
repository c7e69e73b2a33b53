"""The message channel between the runtime and the processes it forks.

A SOCK_SEQPACKET socketpair keeps message boundaries, so each message is one JSON object in
one datagram.  EOF (an empty read) means the other side is gone: every reader treats it as
the end of the conversation, which is how a forked child notices the runtime died.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: its enums and selectors cost ~4 ms a start

from kettle.errors import Internal
from kettle.runtime import jsonio as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MAX = 65536


def pair() -> tuple[socket.socket, socket.socket]:
    """(parent end, child end); both close on exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def send(sock: socket.socket, kind: str, **fields: Any) -> None:
    fields["type"] = kind
    sock.send(json.dumps(fields).encode())


def recv(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None at EOF."""
    try:
        raw = sock.recv(_MAX)
    except ConnectionResetError:
        return None
    if not raw:
        return None
    msg = json.loads(raw)
    if not isinstance(msg, dict):
        raise Internal(f"bad sync message: {raw[:100]!r}")
    return msg


def expect(sock: socket.socket, kind: str) -> dict[str, Any]:
    """Wait for a message of kind; anything else (or EOF) is an error."""
    msg = recv(sock)
    if msg is None:
        raise Internal(f"sync channel closed while waiting for {kind}")
    if msg.get("type") == "error":
        raise Internal(str(msg.get("msg")))
    if msg.get("type") != kind:
        raise Internal(f"unexpected sync message {msg.get('type')!r} while waiting for {kind}")
    return msg
