"""Per-request context handed to server handlers."""

from __future__ import annotations

import threading
import time

from kettle.errors import Cancelled, DeadlineExceeded

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from kettle.ttrpc.peercred import PeerCred

# How often Context.wait() looks at the connection while blocked: a dropped client releases
# its pending Wait handlers within this many seconds, at the cost of one wake-up per period.
_CLOSE_POLL_S = 5.0


class Context:
    """What a handler knows about its call: method, metadata, deadline and peer."""

    __slots__ = ("_closed", "deadline", "metadata", "method", "peer", "service")

    def __init__(
        self,
        service: str,
        method: str,
        metadata: dict[str, list[str]],
        deadline: float | None,
        peer: PeerCred | None,
        closed: threading.Event,
    ) -> None:
        self.service = service
        self.method = method
        #: lower-case key -> values, in the order the client sent them
        self.metadata = metadata
        #: time.monotonic() value after which the client has given up, or None
        self.deadline = deadline
        self.peer = peer
        self._closed = closed

    def get(self, key: str) -> str | None:
        """First metadata value for key (keys are case-insensitive), or None."""
        values = self.metadata.get(key.lower())
        return values[0] if values else None

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once past), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def is_active(self) -> bool:
        """grpc.ServicerContext's name for "the client is still there"."""
        return not self._closed.is_set()

    def add_callback(self, fn: Callable[[], None]) -> bool:
        """Call fn (on a thread of its own) once the client's connection is gone, as
        grpc.ServicerContext.add_callback does when an RPC ends."""

        def wait() -> None:
            self._closed.wait()
            fn()

        threading.Thread(target=wait, name="ttrpc-ctx-callback", daemon=True).start()
        return True

    @property
    def closed(self) -> bool:
        """True once the client's connection is gone: nobody will read the answer."""
        return self._closed.is_set()

    def check(self) -> None:
        """Raise DeadlineExceeded or Cancelled if the call is already over."""
        if self.expired():
            raise DeadlineExceeded(f"{self.service}/{self.method}: deadline exceeded")
        if self._closed.is_set():
            raise Cancelled(f"{self.service}/{self.method}: connection closed")

    def wait(self, event: threading.Event) -> None:
        """Block until event is set, raising if the deadline passes or the client goes away."""
        while True:
            self.check()
            left = self.remaining()
            slice_s = _CLOSE_POLL_S if left is None else min(max(left, 0.0), _CLOSE_POLL_S)
            if event.wait(slice_s):
                return
