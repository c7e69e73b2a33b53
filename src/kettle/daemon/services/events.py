"""kettle.v1 methods: events (`kctl events`), from kettled's event bus.

Filters are Docker's: `type=`, `event=` (or `action=`), `container=` (a name, an id or an id
prefix), `image=` (with or without a tag), `label=key` or `label=key=value`.  Several values
of one key match any of them; different keys must all match."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon.bus import Event
from kettle.daemon.services import Context
from kettle.errors import InvalidArgument

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon

log = logging.getLogger("kettled")

#: the types kettled publishes (kettle.v1.Event.type); add one here when a part does.
TYPES = ("container", "image", "volume", "group")
FILTER_KEYS = ("type", "event", "action", "container", "image", "label")
#: how long a quiet stream waits before looking again whether its client is still there.
_IDLE_S = 1.0
#: put on a subscription's queue to wake its stream when the client goes away.
_WAKE = Event(0, "", "", "")


@dataclass
class Filters:
    types: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)
    #: (key, value or None for any value)
    labels: list[tuple[str, str | None]] = field(default_factory=list)


def parse_filters(items: list[str]) -> Filters:
    f = Filters()
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value:
            raise InvalidArgument(f"filter {item!r}: use key=value ({', '.join(FILTER_KEYS)})")
        if key == "type":
            if value not in TYPES:
                raise InvalidArgument(
                    f"filter {item!r}: unknown event type {value!r} ({', '.join(TYPES)})"
                )
            f.types.add(value)
        elif key in ("event", "action"):
            f.actions.add(value)
        elif key == "container":
            f.containers.add(value)
        elif key == "image":
            f.images.add(value)
        elif key == "label":
            name, has_value, wanted = value.partition("=")
            f.labels.append((name, wanted if has_value else None))
        else:
            raise InvalidArgument(
                f"filter {item!r}: unknown filter {key!r} ({', '.join(FILTER_KEYS)})"
            )
    return f


def _image_forms(text: str) -> tuple[str, str] | None:
    """(normalised reference, its name without tag or digest), or None if it is not one."""
    from kettle.errors import KettleError
    from kettle.image.reference import parse_reference

    try:
        ref = parse_reference(text)
    except KettleError:
        return None
    return str(ref), ref.name


def _image_matches(wanted: str, image: str) -> bool:
    if not image:
        return False
    if wanted == image:
        return True
    want, have = _image_forms(wanted), _image_forms(image)
    if want is None or have is None:
        return False
    # "busybox" names every tag of busybox; "busybox:1.36" only that one.
    tagged = "@" in wanted or ":" in wanted.rsplit("/", 1)[-1]
    return want[0] == have[0] if tagged else want[1] == have[1]


def matches(f: Filters, ev: Event) -> bool:
    attrs = ev.attributes
    if f.types and ev.type not in f.types:
        return False
    # Actions may carry a detail after a colon (Docker's "exec_start: sh", "health_status: ok").
    if f.actions and ev.action not in f.actions and ev.action.split(":")[0] not in f.actions:
        return False
    if f.containers:
        if ev.type != "container":
            return False
        name = attrs.get("name", "")
        if not any(c == name or ev.id.startswith(c) for c in f.containers):
            return False
    if f.images:
        image = attrs.get("image", "") if ev.type == "container" else ev.id
        names = (image, attrs.get("name", "")) if ev.type == "image" else (image,)
        if not any(_image_matches(w, n) for w in f.images for n in names):
            return False
    for key, value in f.labels:
        if key not in attrs or (value is not None and attrs[key] != value):
            return False
    return True


def event_msg(ev: Event) -> pb.Event:
    return pb.Event(
        time_ns=ev.time_ns,
        type=ev.type,
        action=ev.action,
        id=ev.id,
        attributes=dict(ev.attributes),
    )


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def events(self, req: pb.EventsRequest, context: Context) -> Iterator[pb.Event]:
        filters = parse_filters(list(req.filters))
        until = req.until_ns
        # --until alone looks back over everything kept, as Docker's does.
        since = req.since_ns or (1 if until else 0)
        sub, past = self.d.bus.subscribe(since)
        gone = threading.Event()

        def client_gone() -> None:
            gone.set()
            try:
                sub.queue.put_nowait(_WAKE)
            except queue.Full:
                pass  # a full queue wakes the stream at once anyway

        with sub:
            if context is not None and not context.add_callback(client_gone):
                return  # the rpc has already ended
            for ev in past:
                if until and ev.time_ns >= until:
                    return
                if matches(filters, ev):
                    yield event_msg(ev)
            dropped = 0
            while not gone.is_set():
                timeout = _IDLE_S
                if until:
                    left = (until - time.time_ns()) / 1e9
                    if left <= 0:
                        return
                    timeout = min(timeout, left)
                got = sub.get(timeout)
                if got is None:
                    if context is not None and not context.is_active():
                        return
                    continue
                if got is _WAKE:
                    continue
                if sub.dropped > dropped:
                    log.warning("events: a slow client lost %d events", sub.dropped - dropped)
                    dropped = sub.dropped
                if until and got.time_ns >= until:
                    return
                if got.time_ns >= req.since_ns and matches(filters, got):
                    yield event_msg(got)
