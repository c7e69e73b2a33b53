"""ttrpc, containerd's lightweight RPC protocol, over unix stream sockets.

Server and client speak the Go implementation's wire format (github.com/containerd/ttrpc):
10-byte big-endian frame headers, odd client stream ids, 4 MiB messages, per-request metadata
and timeouts, many requests in flight on one connection, google.rpc status codes mapped to
kettle.errors both ways, and a SO_PEERCRED check on every connection.  See docs/ttrpc.md.
"""

from kettle.ttrpc.client import Client
from kettle.ttrpc.context import Context
from kettle.ttrpc.frame import MAX_MESSAGE_SIZE
from kettle.ttrpc.peercred import PeerCred, allow_any, same_user_or_root
from kettle.ttrpc.server import Method, Server
from kettle.ttrpc.status import error_for, status_for

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
