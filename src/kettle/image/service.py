"""ImageService: the image library's front door (pull, list, remove, prune, import, export, rootfs).

Layout under the root (default /var/lib/kettle):
``content/`` blobs and partial downloads, ``snapshots/`` unpacked layers and container
snapshots, ``images.db`` names, ``lock`` (shared by pulls and imports, exclusive for GC).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, NotFound
from kettle.image.auth import Authorizer
from kettle.image.config import ImageConfig, parse_config
from kettle.image.content import ContentStore
from kettle.image.credentials import CredentialStore
from kettle.image.gc import GCResult, collect
from kettle.image.hosts import DEFAULT_CERTS_DIRS, RegistryHosts
from kettle.image.metadata import ImageDB, ImageRecord
from kettle.image.platform import Platform, host_platform, parse_platform
from kettle.image.pull import Progress, Puller, PullStats, require_layers
from kettle.image.reference import Reference, parse_reference
from kettle.image.registry import RegistryClient
from kettle.image.transport import Transport
from kettle.snapshot.apply import ApplyLimits
from kettle.snapshot.mounts import Mount
from kettle.snapshot.store import COMMITTED, Snapshotter

DEFAULT_ROOT = "/var/lib/kettle"


@dataclass(frozen=True)
class RegistryOptions:
    #: registries spoken to over plain HTTP (host:port as in the reference).
    plain_http: tuple[str, ...] = ()
    certs_dirs: tuple[str, ...] = DEFAULT_CERTS_DIRS
    #: parallel layer downloads per pull.
    max_parallel: int = 4
    retries: int = 4
    backoff: float = 0.2
    timeout: float = 30.0


class ImageService:
    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        *,
        registry: RegistryOptions | None = None,
        credentials: CredentialStore | None = None,
        limits: ApplyLimits | None = None,
        snapshot_driver: str = "auto",
    ) -> None:
        self.root = root
        os.makedirs(root, mode=0o711, exist_ok=True)
        self.options = registry or RegistryOptions()
        self.limits = limits or ApplyLimits()
        self.content = ContentStore(os.path.join(root, "content"))
        self.snapshots = Snapshotter(os.path.join(root, "snapshots"), snapshot_driver)
        self.db = ImageDB(os.path.join(root, "images.db"))
        # Extractions a crashed process left behind (live ones hold a lock and are kept).
        self.snapshots.cleanup()
        self.transport = Transport(
            RegistryHosts(self.options.plain_http, self.options.certs_dirs),
            timeout=self.options.timeout,
            retries=self.options.retries,
            backoff=self.options.backoff,
        )
        self.credentials = credentials if credentials is not None else CredentialStore()
        self.client = RegistryClient(self.transport, Authorizer(self.transport, self.credentials))
        self.puller = Puller(
            self.client,
            self.content,
            self.snapshots,
            limits=self.limits,
            max_parallel=self.options.max_parallel,
        )

    def close(self) -> None:
        self.transport.close()
        self.db.close()
        self.snapshots.close()

    def __enter__(self) -> ImageService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # --- names --------------------------------------------------------------------------------

    @staticmethod
    def normalize(ref: str | Reference) -> Reference:
        return ref if isinstance(ref, Reference) else parse_reference(ref)

    @staticmethod
    def record_name(ref: Reference) -> str:
        """The name an image is stored under: with its tag, or by digest when pulled so."""
        if ref.digest:
            return f"{ref.name}@{ref.digest}"
        return str(ref)

    def _find(self, ref: str | Reference) -> ImageRecord:
        if isinstance(ref, str) and ref.startswith("sha256:"):
            # An image id (config digest) or a target digest.
            for rec in self.db.list():
                if ref in (rec.config, rec.target, rec.manifest):
                    return rec
            raise NotFound(f"image {ref} not found")
        r = self.normalize(ref)
        found = self.db.find(self.record_name(r))
        if found is not None:
            return found
        if r.digest:
            for cand in self.db.list():
                if cand.name.startswith(r.name) and r.digest in (cand.target, cand.manifest):
                    return cand
        raise NotFound(f"image {r} not found")

    # --- operations -----------------------------------------------------------------------

    def pull(
        self,
        ref: str | Reference,
        *,
        platform: str | Platform | None = None,
        progress: Progress | None = None,
        stats: PullStats | None = None,
    ) -> ImageRecord:
        """Pull ``ref`` into the store and unpack it; the image is listed only once complete."""
        r = self.normalize(ref)
        plat = _platform(platform)
        with self._locked(exclusive=False):
            rec = self.puller.pull(r, self.record_name(r), plat, progress, stats)
            return self.db.put(rec)

    def get(self, ref: str | Reference) -> ImageRecord:
        return self._find(ref)

    def list(self) -> builtins.list[ImageRecord]:
        return self.db.list()

    def config(self, ref: str | Reference | ImageRecord) -> ImageConfig:
        rec = ref if isinstance(ref, ImageRecord) else self._find(ref)
        return parse_config(self.content.read(rec.config), f"image {rec.name} config")

    def tag(self, source: str | Reference, target: str | Reference) -> ImageRecord:
        rec = self._find(source)
        t = self.normalize(target)
        if t.digest:
            raise InvalidArgument(f"tag {t}: a tag cannot carry a digest")
        new = ImageRecord(
            self.record_name(t), rec.target, rec.target_media_type, rec.manifest, rec.config,
            rec.chain_id, rec.platform, rec.size, 0.0, 0.0,
        )  # fmt: skip
        return self.db.put(new)

    def remove(self, ref: str | Reference, *, gc: bool = True) -> None:
        """Forget a name; its blobs and layers go when nothing else uses them (now, with gc)."""
        rec = self._find(ref)
        self.db.delete(rec.name)
        if gc:
            self.gc()

    def prune(self, *, all_unused: bool = False) -> GCResult:
        """Collect garbage; with all_unused, also forget images no container snapshot uses."""
        if all_unused:
            used = {i.parent for i in self.snapshots.list() if i.kind != COMMITTED}
            for rec in self.db.list():
                if rec.chain_id not in used:
                    self.db.delete(rec.name)
        return self.gc()

    def gc(self) -> GCResult:
        with self._locked(exclusive=True):
            return collect(self.db, self.content, self.snapshots)

    def verify(self) -> builtins.list[str]:
        """Problems found in the store (empty when consistent); reads every blob."""
        problems: builtins.list[str] = []
        for digest, _ in self.content.list():
            if not self.content.verify(digest):
                problems.append(f"blob {digest}: content does not match its digest")
        from kettle.image.gc import live_sets

        for rec in self.db.list():
            for d in (rec.target, rec.manifest, rec.config):
                if not self.content.has(d):
                    problems.append(f"image {rec.name}: blob {d} missing")
            try:
                require_layers(self.snapshots, rec.chain_id, f"image {rec.name}")
            except KettleError as exc:
                problems.append(str(exc))
        blobs, _ = live_sets(self.db, self.content, self.snapshots)
        for d in sorted(blobs):
            if not self.content.has(d):
                problems.append(f"blob {d} referenced but missing")
        for info in self.snapshots.list():
            if info.parent is not None and self.snapshots.stat(info.parent) is None:
                problems.append(f"snapshot {info.key}: parent {info.parent} missing")
        return problems

    # --- containers -------------------------------------------------------------------------

    def prepare_rootfs(self, ref: str | Reference | ImageRecord, key: str) -> builtins.list[Mount]:
        """A writable snapshot named ``key`` over the image's layers; mount what is returned."""
        rec = ref if isinstance(ref, ImageRecord) else self._find(ref)
        with self._locked(exclusive=False):
            require_layers(self.snapshots, rec.chain_id, f"image {rec.name}")
            return self.snapshots.prepare(key, rec.chain_id, {"image": rec.name})

    def remove_rootfs(self, key: str) -> None:
        self.snapshots.remove(key)

    # --- offline ------------------------------------------------------------------------------

    def import_archive(
        self, source: str | BinaryIO, *, name: str | None = None, platform: str | None = None
    ) -> builtins.list[ImageRecord]:
        """Import an OCI layout tarball or a ``docker save`` archive (gzip or plain)."""
        from kettle.image.archive import import_archive

        plat = _platform(platform)
        with self._locked(exclusive=False):
            recs = import_archive(self, source, name, plat)
            return [self.db.put(r) for r in recs]

    def export_archive(self, refs: Iterable[str | Reference], dest: str | BinaryIO) -> None:
        """Write the images as an OCI layout tarball that ``docker load`` also reads."""
        from kettle.image.archive import export_archive

        recs = [self._find(r) for r in refs]
        if not recs:
            raise FailedPrecondition("export: no image named")
        with self._locked(exclusive=False):
            export_archive(self, recs, dest)


def _platform(platform: str | Platform | None) -> Platform:
    if platform is None:
        return host_platform()
    if isinstance(platform, Platform):
        return platform
    return parse_platform(platform)
