"""The events service shims publish to ($TTRPC_ADDRESS): containerd.services.events.ttrpc.v1.

kettled learns exits through each task's Wait; from the shims' events it takes what Wait
does not tell (an OOM kill) and hands the rest to the log at debug level."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from kettle.proto import events_pb, events_service_pb
from kettle.ttrpc import Context, Server

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.daemon.bus import EventBus

log = logging.getLogger("kettled")


class _Events:
    def __init__(self, sink: EventSink) -> None:
        self._sink = sink

    def forward(self, req: events_service_pb.ForwardRequest, _ctx: Context) -> None:
        env = req.envelope
        if env is None:
            return
        log.debug("event %s from namespace %s", env.topic, env.namespace)
        if env.topic == "/tasks/oom" and env.event is not None and self._sink.on_oom:
            oom = events_pb.TaskOOM.decode(env.event.value)
            self._sink.on_oom(oom.container_id)


class EventSink:
    def __init__(self, path: str, bus: EventBus) -> None:
        if os.path.lexists(path):
            os.unlink(path)  # left by a previous kettled (the state lock is ours)
        self.address = path
        self.bus = bus
        #: set once the containers exist: called with a container id on /tasks/oom.
        self.on_oom: Callable[[str], None] | None = None
        self._server = Server(log=lambda line: log.warning("events: %s", line))
        self._server.register_service(events_service_pb.EVENTS_SERVICE, _Events(self))
        self._server.listen(path, mode=0o600)
        self._server.start()

    def close(self) -> None:
        self._server.shutdown()
