"""ttrpc, containerd's lightweight RPC protocol, over unix stream sockets.

Server and client speak the Go implementation's wire format (github.com/containerd/ttrpc):
10-byte big-endian frame headers, odd client stream ids, 4 MiB messages, per-request metadata
and timeouts, many requests in flight on one connection, google.rpc status codes mapped to
kettle.errors both ways, and a SO_PEERCRED check on every connection.  See docs/ttrpc.md.
"""

# The names load on first use (PEP 562): a client (kctl's fast path) must not pay for the
# server's modules (socket, select) on every start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.ttrpc.client import Client
    from kettle.ttrpc.context import Context
    from kettle.ttrpc.frame import MAX_MESSAGE_SIZE
    from kettle.ttrpc.peercred import PeerCred, allow_any, same_user_or_root
    from kettle.ttrpc.server import Method, Server
    from kettle.ttrpc.status import error_for, status_for
else:
    from kettle.lazy import attributes

    __getattr__ = attributes(
        __name__,
        {
            "Client": "kettle.ttrpc.client",
            "Context": "kettle.ttrpc.context",
            "MAX_MESSAGE_SIZE": "kettle.ttrpc.frame",
            "PeerCred": "kettle.ttrpc.peercred",
            "allow_any": "kettle.ttrpc.peercred",
            "same_user_or_root": "kettle.ttrpc.peercred",
            "Method": "kettle.ttrpc.server",
            "Server": "kettle.ttrpc.server",
            "error_for": "kettle.ttrpc.status",
            "status_for": "kettle.ttrpc.status",
        },
    )


__all__ = [
    "MAX_MESSAGE_SIZE",
    "Client",
    "Context",
    "Method",
    "PeerCred",
    "Server",
    "allow_any",
    "error_for",
    "same_user_or_root",
    "status_for",
]
