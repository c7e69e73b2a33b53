"""kettled's client API, proto package `kettle.v1` (kettle.proto; messages in kettle_pb).

gRPC carries these messages with generic handlers and Kettle's own codec (kettle.proto._wire),
so neither grpcio-tools nor protobuf is needed at run time."""

from __future__ import annotations

SERVICE = "kettle.v1.Kettle"
#: methods whose response is a stream (the generated Service table does not record it).
SERVER_STREAMING = frozenset(
    (
        "PullImage",
        "Logs",
        "Stats",
        "Exec",
        "Attach",
        "CopyOut",
        "Events",
        "SaveImages",
    )
)
#: methods whose request is a stream (Exec and Attach stream both ways).
CLIENT_STREAMING = frozenset(("Exec", "Attach", "CopyIn", "LoadImages"))
#: default socket of kettled.
DEFAULT_ADDRESS = "/run/kettle/kettle.sock"
API_VERSION = "v1"
#: kettled also serves the unary methods over ttrpc on the socket's path + this suffix: the
#: import of grpcio alone is ~60 ms of a kctl start, so `kctl ps` and friends go without it.
TTRPC_SUFFIX = ".ttrpc"
