"""kettle.v1 methods: images (pull, list, remove, inspect, tag, prune, load, save, login).

Docker's rules for names: `rmi` of one of several tags only untags; the last tag of an image a
container was made from is refused, naming the container; an image id with several tags is
refused unless forced.  Every change is published on the bus as an `image` event.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon.services import Context
from kettle.errors import Cancelled, FailedPrecondition, InvalidArgument, KettleError
from kettle.image.credentials import CredentialStore
from kettle.image.reference import parse_reference
from kettle.image.service import is_tagged

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon
    from kettle.image.metadata import ImageRecord
    from kettle.image.pull import PullEvent

log = logging.getLogger("kettled")

#: a layer's byte count is sent at most this often (state changes always go at once).
PROGRESS_INTERVAL = 0.1
#: bytes per DataChunk of a saved archive.
CHUNK = 1 << 20
#: PullEvent kind -> PullProgress kind (kinds not listed are not sent).
PULL_KINDS = {
    "resolved": "resolved",
    "waiting": "waiting",
    "resume": "downloading",
    "download": "downloading",
    "verifying": "verifying",
    "unpacking": "unpacking",
    "exists": "exists",
    "unpacked": "complete",
}
#: kettled's own registry credentials, under its root.
CREDENTIALS_FILE = "auth.json"


class Throttle:
    """Drops byte-count updates that come sooner than `interval` after the last one sent
    for the same layer; a finished count and every state change pass."""

    def __init__(self, interval: float = PROGRESS_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def passes(self, kind: str, digest: str, done: int, total: int, now: float) -> bool:
        if kind != "downloading" or (total and done >= total):
            return True
        with self._lock:
            if now - self._last.get(digest, -1e9) < self.interval:
                return False
            self._last[digest] = now
            return True


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an image config's `created`; 0 when absent or bad."""
    if not text:
        return 0
    head, dot, rest = text.partition(".")
    frac, zone = "", ""
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, zone = rest[:digits], rest[digits:]
    try:
        when = datetime.fromisoformat(head + (zone if dot else "").replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        return 0
    return int(when.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


class _ChunkReader:
    """A read()-able file over the chunks of a client stream (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[pb.DataChunk]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buf) < n):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._eof = True
            else:
                self._buf += chunk.data
        if n < 0:
            n = len(self._buf)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data


class _QueueWriter:
    """A write()-able file whose bytes go to the RPC thread in CHUNK-sized pieces; bounded,
    so a slow client slows the export instead of filling kettled's memory."""

    def __init__(self, q: queue.Queue[bytes | BaseException | None], gone: threading.Event):
        self._q = q
        self._gone = gone
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) >= CHUNK:
            self._put(bytes(self._buf[:CHUNK]))
            del self._buf[:CHUNK]
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self._put(bytes(self._buf))
            self._buf.clear()

    def _put(self, chunk: bytes) -> None:
        while True:
            if self._gone.is_set():
                raise Cancelled("save: the client went away")
            try:
                self._q.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.images = daemon.images
        creds = os.path.join(daemon.config.root, CREDENTIALS_FILE)
        if self.images.credentials.kettle_file != creds:
            # kettled's logins live under its root, apart from anyone else's; until main.py
            # builds the ImageService with this store, switch to it here.
            self.images.set_credentials(CredentialStore(creds, use_docker=False))
        # One name change at a time: rmi and prune decide on what they have just looked at.
        self._names = threading.Lock()
        self._gc_wanted = threading.Event()
        self._gc_running = False
        self._gc_guard = threading.Lock()
        self._created: dict[str, int] = {}
        self._sizes: dict[str | None, int] = {}

    # --- messages -----------------------------------------------------------------------------

    def image_msg(self, rec: ImageRecord) -> pb.Image:
        created = self._created.get(rec.config)
        if created is None:
            try:
                created = self._created[rec.config] = rfc3339_ns(self.images.config(rec).created)
            except KettleError:
                created = 0  # a damaged image still lists; `verify` names the problem
        size = self._sizes.get(rec.chain_id)
        if size is None:
            size = self._sizes[rec.chain_id] = self.images.unpacked_size(rec)
        return pb.Image(
            name=rec.name,
            digest=rec.target,
            config=rec.config,
            size=size,
            # Docker's CREATED is the image's own date; the pull time when it has none.
            created_ns=created or int(rec.created * 1e9),
            platform=rec.platform,
        )

    def _event(self, action: str, id_: str, **attrs: str) -> None:
        self.d.bus.publish("image", action, id_, attrs)

    # --- pull -------------------------------------------------------------------------------

    def pull_image(self, req: pb.PullImageRequest, ctx: Context) -> Iterator[pb.PullProgress]:
        events: queue.Queue[pb.PullProgress | BaseException | None] = queue.Queue()
        gone = threading.Event()
        ctx.add_callback(gone.set)
        throttle = Throttle()
        ref = req.reference

        def progress(ev: PullEvent) -> None:
            if gone.is_set():
                # Raised in the puller's threads: the pull stops, downloads stay resumable.
                raise Cancelled(f"pull {ref}: the client went away")
            kind = PULL_KINDS.get(ev.kind)
            if kind is None or not throttle.passes(
                kind, ev.digest, ev.done, ev.total, time.monotonic()
            ):
                return
            events.put(pb.PullProgress(kind=kind, digest=ev.digest, done=ev.done, total=ev.total))

        def run() -> None:
            try:
                rec = self.images.pull(ref, progress=progress)
                self._event("pull", rec.name, name=rec.name, id=rec.config)
                events.put(
                    pb.PullProgress(kind="done", digest=rec.target, image=self.image_msg(rec))
                )
                events.put(None)
            except BaseException as e:  # handed to the RPC thread, which reports it
                events.put(e)

        threading.Thread(target=run, name="pull", daemon=True).start()
        try:
            while True:
                item = events.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            gone.set()

    # --- names --------------------------------------------------------------------------------

    def list_images(self, _req: pb.ListImagesRequest, _ctx: Context) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=[self.image_msg(r) for r in self.images.list()])

    def inspect_image(self, req: pb.ImageRequest, _ctx: Context) -> pb.ImageDetail:
        rec = self.images.get(req.reference)
        content = self.images.content
        return pb.ImageDetail(
            image=self.image_msg(rec),
            config_json=content.read(rec.config).decode(),
            manifest_json=content.read(rec.manifest).decode(),
            tags=[r.name for r in self.images.names(rec)],
        )

    def tag_image(self, req: pb.TagImageRequest, _ctx: Context) -> pb.Image:
        with self._names:
            new = self.images.tag(req.source, req.target)
        self._event("tag", new.name, name=new.name, id=new.config)
        return self.image_msg(new)

    def remove_image(self, req: pb.RemoveImageRequest, _ctx: Context) -> pb.Empty:
        # RemoveImageRequest has no force field yet; honoured once it has one.
        force = bool(getattr(req, "force", False))
        with self._names:
            rec = self.images.get(req.reference)
            names = self.images.names(rec)
            tagged = [r.name for r in names if is_tagged(r.name)]
            if _stored_name(req.reference) == rec.name:
                if [n for n in tagged if n != rec.name]:
                    # Docker: removing one of several names only untags; digest names
                    # (name@sha256:...) go with the last tag.
                    self.images.untag(rec.name)
                    self._event("untag", rec.config, name=rec.name)
                    return pb.Empty()
            elif len(tagged) > 1 and not force:
                shown = ", ".join(parse_reference(n).familiar() for n in tagged)
                raise FailedPrecondition(
                    f"image {_short(rec.config)} has several names ({shown}):"
                    " remove them by name, or force"
                )
            users = self.images.users(rec)
            if users and not force:
                raise FailedPrecondition(
                    f"image {parse_reference(rec.name).familiar()} is in use by"
                    f" {self._containers(users)}; remove the container first"
                )
            for r in names:
                self.images.untag(r.name)
                self._event("untag", rec.config, name=r.name)
        self._event("delete", rec.config, name=rec.name)
        self._collect_later()
        return pb.Empty()

    def _containers(self, keys: list[str]) -> str:
        shown = []
        for key in keys:
            found = self.d.containers.store.get(key)
            shown.append(f"{found.name} ({key[:12]})" if found is not None else key[:12])
        word = "container" if len(shown) == 1 else "containers"
        return f"{word} {', '.join(shown)}"

    def prune_images(self, req: pb.PruneImagesRequest, _ctx: Context) -> pb.PruneImagesResponse:
        with self._names:
            res = self.images.prune(all_unused=req.all)
        for name in res.untagged:
            self._event("untag", "", name=name)
        for image_id in res.deleted:
            self._event("delete", image_id)
        self._event("prune", "", reclaimed=str(res.reclaimed))
        return pb.PruneImagesResponse(
            deleted=[*res.untagged, *res.deleted], reclaimed=res.reclaimed
        )

    def _collect_later(self) -> None:
        """Garbage-collect in the background: GC excludes pulls, and `rmi` should not wait for
        a slow pull to end.  Requests while one runs fold into one more run."""
        self._gc_wanted.set()
        with self._gc_guard:
            if self._gc_running:
                return
            self._gc_running = True
        threading.Thread(target=self._collector, name="image-gc", daemon=True).start()

    def _collector(self) -> None:
        try:
            while self._gc_wanted.is_set():
                self._gc_wanted.clear()
                try:
                    res = self.images.gc()
                    log.debug("image gc: %d blobs, %d layers", len(res.blobs_removed),
                              len(res.snapshots_removed))  # fmt: skip
                except Exception:
                    log.exception("image gc failed")
        finally:
            with self._gc_guard:
                self._gc_running = False
            if self._gc_wanted.is_set():
                self._collect_later()

    # --- archives ---------------------------------------------------------------------------

    def load_images(self, chunks: Iterator[pb.DataChunk], _ctx: Context) -> pb.LoadImagesResponse:
        recs = self.images.import_archive(_ChunkReader(chunks))  # type: ignore[arg-type]
        for rec in recs:
            self._event("load", rec.name, name=rec.name, id=rec.config)
        return pb.LoadImagesResponse(images=[self.image_msg(r) for r in recs])

    def save_images(self, req: pb.SaveImagesRequest, ctx: Context) -> Iterator[pb.DataChunk]:
        if not req.references:
            raise InvalidArgument("save: no image named")
        recs = [self.images.get(r) for r in req.references]  # unknown names fail up front
        q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        gone = threading.Event()
        ctx.add_callback(gone.set)
        writer = _QueueWriter(q, gone)

        def run() -> None:
            try:
                self.images.export_archive([r.name for r in recs], writer)  # type: ignore[arg-type]
                writer.flush()
                item: bytes | BaseException | None = None
            except BaseException as e:
                item = e
            while not gone.is_set():
                try:
                    q.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue

        threading.Thread(target=run, name="save", daemon=True).start()
        try:
            while True:
                got = q.get()
                if got is None:
                    break
                if isinstance(got, BaseException):
                    raise got
                yield pb.DataChunk(data=got)
        finally:
            gone.set()
        for rec in recs:
            self._event("save", rec.name, name=rec.name, id=rec.config)

    # --- registries -------------------------------------------------------------------------

    def login(self, req: pb.LoginRequest, _ctx: Context) -> pb.Empty:
        registry = self.images.login(req.server or "docker.io", req.username, req.password)
        log.info("logged in to %s as %s", registry, req.username)
        return pb.Empty()

    def logout(self, req: pb.LogoutRequest, _ctx: Context) -> pb.Empty:
        registry = self.images.logout(req.server or "docker.io")
        log.info("logged out of %s", registry)
        return pb.Empty()


def _stored_name(text: str) -> str | None:
    """The name `text` is stored under when it is a name (None for an image id)."""
    from kettle.image.service import ImageService

    try:
        return ImageService.record_name(parse_reference(text))
    except InvalidArgument:
        return None


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
