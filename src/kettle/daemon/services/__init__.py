"""The parts of kettled's gRPC service, one module per area.

Each module has a class `Part(daemon)` whose snake_case methods serve the kettle.v1 methods of
the same name (kettle.daemon.server.handlers); a method no part serves answers UNIMPLEMENTED."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon

#: grpc.ServicerContext (grpcio ships no type stubs).
Context = Any

#: in lookup order: the first part with a method serves it (so an area's part may take a
#: method over from core).
PARTS = (
    "lifecycle",
    "execs",
    "copy",
    "events",
    "images",
    "volumes",
    "stats",
    "groups",
    "core",
)


def make_parts(daemon: Daemon) -> list[object]:
    parts: list[object] = []
    for name in PARTS:
        mod = importlib.import_module(f"kettle.daemon.services.{name}")
        parts.append(mod.Part(daemon))
    return parts
