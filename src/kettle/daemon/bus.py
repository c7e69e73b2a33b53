"""kettled's event bus: every part publishes here; `kctl events` and the supervisor subscribe.

Recent events are kept in a bounded ring so that `events --since` can look back; a slow
subscriber loses its oldest events rather than holding kettled's memory."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

_HISTORY = 4096
_SUBSCRIBER_BACKLOG = 4096


@dataclass(frozen=True)
class Event:
    time_ns: int
    #: container, image, volume, group
    type: str
    action: str
    id: str
    attributes: Mapping[str, str] = field(default_factory=dict)


class Subscription:
    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.queue: queue.Queue[Event] = queue.Queue(_SUBSCRIBER_BACKLOG)
        self.dropped = 0

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._history: collections.deque[Event] = collections.deque(maxlen=_HISTORY)
        self._subs: list[Subscription] = []

    def publish(
        self, type_: str, action: str, id_: str, attributes: Mapping[str, str] | None = None
    ) -> Event:
        ev = Event(time.time_ns(), type_, action, id_, dict(attributes or {}))
        with self._lock:
            self._history.append(ev)
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.queue.put_nowait(ev)
            except queue.Full:
                sub.dropped += 1
        return ev

    def subscribe(self, since_ns: int = 0) -> tuple[Subscription, list[Event]]:
        """A live subscription and the kept events at or after since_ns (0: none), taken
        atomically so that nothing falls between the two."""
        sub = Subscription(self)
        with self._lock:
            past = [e for e in self._history if since_ns and e.time_ns >= since_ns]
            self._subs.append(sub)
        return sub, past

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
