"""Publishing task events to containerd, in order, from one thread.

Path A (what the Go shims do): ttrpc ``containerd.services.events.ttrpc.v1.Events/Forward``
on ``$TTRPC_ADDRESS``, 5 s per call, a few retries with back-off (containerd may be
restarting).  Path B when A keeps failing: ``<publish-binary> --address <grpc> publish
--topic T --namespace NS`` with the marshalled Any on stdin.  One queue and one thread keep
events in the order they were published (TaskStart before TaskExit), without ever blocking
the caller.
"""

from __future__ import annotations

import collections
import threading
import time

from kettle.errors import KettleError
from kettle.shim import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.proto._wire import Message
    from kettle.proto.envelope_pb import Envelope
    from kettle.shim.reaper import Reaper
    from kettle.ttrpc import Client

_CALL_TIMEOUT_S = 5.0
_RETRIES = 5
_BACKOFF_S = 0.1

TOPICS = {
    "TaskCreate": "/tasks/create",
    "TaskStart": "/tasks/start",
    "TaskExit": "/tasks/exit",
    "TaskDelete": "/tasks/delete",
    "TaskExecAdded": "/tasks/exec-added",
    "TaskExecStarted": "/tasks/exec-started",
    "TaskOOM": "/tasks/oom",
    "TaskPaused": "/tasks/paused",
    "TaskResumed": "/tasks/resumed",
    "TaskCheckpointed": "/tasks/checkpointed",
}


class Publisher:
    def __init__(
        self,
        namespace: str,
        ttrpc_address: str,
        grpc_address: str = "",
        publish_binary: str = "",
        reaper: Reaper | None = None,
    ) -> None:
        self.namespace = namespace
        self.ttrpc_address = ttrpc_address
        self.grpc_address = grpc_address
        self.publish_binary = publish_binary
        self.reaper = reaper
        self._queue: collections.deque[Envelope] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._client: Client | None = None

    def publish(self, event: Message) -> None:
        """Queue event (a containerd.events.* message) for its topic."""
        from kettle.proto import envelope_pb, wkt

        envelope = envelope_pb.Envelope(
            timestamp=wkt.timestamp_now(),
            namespace=self.namespace,
            topic=TOPICS[type(event).__name__],
            event=wkt.pack_any(event),
        )
        with self._cond:
            self._queue.append(envelope)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shim-events", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was sent (or given up on); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                envelope = self._queue.popleft()
                self._busy = True
            try:
                self._send(envelope)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, envelope: Envelope) -> None:
        error: KettleError | None = None
        if self.ttrpc_address:
            delay = _BACKOFF_S
            for attempt in range(_RETRIES):
                try:
                    self._forward(envelope)
                    return
                except KettleError as e:
                    error = e
                    self._drop_client()
                if attempt + 1 < _RETRIES:
                    time.sleep(delay)
                    delay *= 2
        if self.publish_binary and self.grpc_address:
            try:
                self._exec_publish(envelope)
                return
            except KettleError as e:
                error = e
        log.error(f"publish {envelope.topic}: giving up: {error or 'no way to reach containerd'}")

    def _forward(self, envelope: Envelope) -> None:
        from kettle.proto import empty_pb, events_service_pb
        from kettle.ttrpc import Client

        if self._client is None or self._client.closed:
            self._client = Client.connect(self.ttrpc_address, timeout=_CALL_TIMEOUT_S)
        self._client.call(
            events_service_pb.EVENTS_SERVICE.name,
            "Forward",
            events_service_pb.ForwardRequest(envelope=envelope),
            empty_pb.Empty,
            timeout=_CALL_TIMEOUT_S,
        )

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _exec_publish(self, envelope: Envelope) -> None:
        from kettle.shim import spawn
        from kettle.shim.reaper import Reaper

        assert envelope.event is not None
        argv = [
            self.publish_binary,
            "--address",
            self.grpc_address,
            "publish",
            "--topic",
            envelope.topic,
            "--namespace",
            envelope.namespace,
        ]
        result = spawn.run(self.reaper or Reaper(), argv, input=envelope.event.encode())
        if result.code != 0:
            text = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise KettleError(f"{self.publish_binary} publish: exit status {result.code}: {text}")
