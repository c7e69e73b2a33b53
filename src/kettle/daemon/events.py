"""The events service shims publish to ($TTRPC_ADDRESS): containerd.services.events.ttrpc.v1.

kettled learns exits through each task's Wait; the events are logged at debug level (a
future `kctl events` streams them)."""

from __future__ import annotations

import logging
import os

from kettle.proto import events_service_pb
from kettle.ttrpc import Context, Server

log = logging.getLogger("kettled")


class _Events:
    def forward(self, req: events_service_pb.ForwardRequest, _ctx: Context) -> None:
        env = req.envelope
        if env is not None:
            log.debug("event %s from namespace %s", env.topic, env.namespace)


class EventSink:
    def __init__(self, path: str) -> None:
        if os.path.lexists(path):
            os.unlink(path)  # left by a previous kettled (the state lock is ours)
        self.address = path
        self._server = Server(log=lambda line: log.warning("events: %s", line))
        self._server.register_service(events_service_pb.EVENTS_SERVICE, _Events())
        self._server.listen(path, mode=0o600)
        self._server.start()

    def close(self) -> None:
        self._server.shutdown()
