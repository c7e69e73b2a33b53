"""`shim start`'s side of sharing a shim: ask a running shim to take one more container.

A shim that serves several containers (a pod, or a namespace's pool) must not exit between
the moment `shim start` hands containerd its address and containerd's Create.  So start asks
first (``kettle.shim.v1.Pool/Admit``, payload ``<id>\\n<limit>``): the shim reserves a place
for the id, or answers RESOURCE_EXHAUSTED (pool full: try the next pool) or anything else
(it is stopping: start a new one).  One blocking ttrpc exchange over a plain socket, framed
by hand: `shim start` runs once per container and must not pay for threads, the socket
module's enums or the ttrpc package.
"""

from __future__ import annotations

import _socket
import struct

from kettle.errors import Unavailable

SERVICE = "kettle.shim.v1.Pool"

ADMITTED = "admitted"
FULL = "full"
STOPPING = "stopping"

_HEADER = struct.Struct(">IIBB")  # length, stream id, type, flags
_TYPE_REQUEST = 1
_TYPE_RESPONSE = 2
_RESOURCE_EXHAUSTED = 8
_UNIMPLEMENTED = 12


def encode_admit(container_id: str, limit: int) -> bytes:
    return f"{container_id}\n{limit}".encode()


def decode_admit(payload: bytes) -> tuple[str, int]:
    text = payload.decode()
    container_id, _, limit = text.partition("\n")
    return container_id, int(limit or 0)


def _recv_exact(sock: _socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def admit(path: str, container_id: str, limit: int, timeout: float = 10.0) -> str:
    """Ask the shim listening on path to admit container_id.  Raises Unavailable when
    nothing answers there (a stale socket)."""
    from kettle.proto.ttrpc_pb import Request, Response

    req = Request(
        service=SERVICE,
        method="Admit",
        payload=encode_admit(container_id, limit),
        timeout_nano=int(timeout * 1e9),
    ).encode()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise Unavailable(f"shim at {path}: {(e.strerror or str(e)).lower()}") from None
        try:
            sock.sendall(_HEADER.pack(len(req), 1, _TYPE_REQUEST, 0) + req)
            while True:
                length, stream, kind, _flags = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
                body = _recv_exact(sock, length)
                if kind == _TYPE_RESPONSE and stream == 1:
                    break
        except TimeoutError:
            raise Unavailable(f"shim at {path}: no answer in {timeout:g}s") from None
        except (OSError, EOFError):
            return STOPPING  # it closed the connection unanswered: it is exiting
    finally:
        sock.close()
    resp = Response.decode(body)
    code = resp.status.code if resp.status is not None else 0
    if code == 0 or code == _UNIMPLEMENTED:
        # UNIMPLEMENTED: not a Kettle shim that pools; it serves what it is asked to.
        return ADMITTED
    if code == _RESOURCE_EXHAUSTED:
        return FULL
    return STOPPING
