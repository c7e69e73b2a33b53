"""ImageService: the image library's front door (pull, list, remove, prune, import, export, rootfs).

Layout under the root (default /var/lib/kettle):
``content/`` blobs and partial downloads, ``snapshots/`` unpacked layers and container
snapshots, ``images.db`` names, ``lock`` (shared by pulls and imports, exclusive for GC).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import fcntl
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, NotFound
from kettle.image.auth import Authorizer
from kettle.image.config import ImageConfig, parse_config
from kettle.image.content import ContentStore
from kettle.image.credentials import Credential, CredentialStore
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
from kettle.snapshot.store import ACTIVE, VIEW, Snapshotter

log = logging.getLogger("kettle.image")

DEFAULT_ROOT = "/var/lib/kettle"
#: label a container snapshot carries: the id (config digest) of the image it was made from.
IMAGE_ID_LABEL = "image.id"
#: an abbreviated image id, as Docker accepts (`rmi 3f57d9401f8d`).
_ID_PREFIX = re.compile(r"^[a-f0-9]{4,64}$")


@dataclass(frozen=True)
class RegistryOptions:
    #: registries spoken to over plain HTTP (host:port as in the reference).
    plain_http: tuple[str, ...] = ()
    certs_dirs: tuple[str, ...] = DEFAULT_CERTS_DIRS
    #: registry host -> mirror endpoints tried first, in order ("http://h:p" or "https://h").
    mirrors: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: parallel layer downloads per pull.
    max_parallel: int = 4
    retries: int = 4
    backoff: float = 0.2
    timeout: float = 30.0


@dataclass
class PruneResult:
    #: names forgotten (``untagged``), in the order removed.
    untagged: list[str] = field(default_factory=list)
    #: ids (config digests) of the images deleted.
    deleted: list[str] = field(default_factory=list)
    #: bytes freed: blobs plus unpacked layers.
    reclaimed: int = 0
    gc: GCResult = field(default_factory=GCResult)


def is_tagged(name: str) -> bool:
    """Whether a stored image name carries a tag (``name@sha256:...`` does not)."""
    return parse_reference(name).tag is not None


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
        self.mirrors = mirror_hosts(self.options.mirrors)
        plain = {*self.options.plain_http}
        plain |= {h for hosts in self.mirrors.values() for h, scheme in hosts if scheme == "http"}
        self.transport = Transport(
            RegistryHosts(sorted(plain), self.options.certs_dirs),
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

    def set_credentials(self, credentials: CredentialStore) -> None:
        """Use another credential store from now on (pulls in progress keep theirs)."""
        self.credentials = credentials
        self._reset_auth()

    def _reset_auth(self) -> None:
        # Authorizer caches credentials and tokens per host: a fresh one forgets them.
        self.client.auth = Authorizer(self.transport, self.credentials)

    def login(self, server: str, username: str, password: str) -> str:
        """Check the credentials against the registry, then store them; the registry name."""
        from kettle.image.login import registry_of, verify

        registry, endpoint = registry_of(server)
        verify(self.transport, registry, endpoint, Credential(username, password))
        self.credentials.save(registry, username, password)
        self._reset_auth()
        return registry

    def logout(self, server: str) -> str:
        """Forget stored credentials for a registry; the registry name (NotFound if none)."""
        from kettle.image.login import registry_of

        registry, _ = registry_of(server)
        if not self.credentials.remove(registry):
            raise NotFound(f"not logged in to {registry}")
        self._reset_auth()
        return registry

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
            # An image id (config digest, maybe abbreviated) or a target digest.
            for rec in self.db.list():
                if ref in (rec.config, rec.target, rec.manifest):
                    return rec
            found = self._by_id_prefix(ref[len("sha256:") :]) if len(ref) > 7 else None
            if found is None:
                raise NotFound(f"image {ref} not found")
            return found
        if isinstance(ref, str) and len(ref) == 64 and _ID_PREFIX.match(ref):
            return self._find("sha256:" + ref)
        r = self.normalize(ref)
        found = self.db.find(self.record_name(r))
        if found is not None:
            return found
        if r.digest:
            for cand in self.db.list():
                if cand.name.startswith(r.name) and r.digest in (cand.target, cand.manifest):
                    return cand
        # Docker takes a short image id where no image has that name.
        if isinstance(ref, str) and _ID_PREFIX.match(ref):
            found = self._by_id_prefix(ref)
            if found is not None:
                return found
        raise NotFound(f"image {r} not found")

    def _by_id_prefix(self, prefix: str) -> ImageRecord | None:
        matches: dict[str, ImageRecord] = {}
        for rec in self.db.list():
            if rec.config.startswith("sha256:" + prefix):
                matches.setdefault(rec.config, rec)
        if len(matches) > 1:
            raise InvalidArgument(f"image id {prefix} is ambiguous: {len(matches)} images match")
        return next(iter(matches.values()), None)

    def _put(self, rec: ImageRecord) -> ImageRecord:
        """Write an image row; an image the name moves away from stays, as ``name@digest``
        (Docker's dangling image), while no other name holds it, so prune can find it."""
        old = self.db.find(rec.name)
        new = self.db.put(rec)
        if old is None or old.config == rec.config:
            return new
        if any(r.config == old.config for r in self.db.list()):
            return new
        keep = f"{parse_reference(old.name).name}@{old.target}"
        if self.db.find(keep) is None:
            self.db.put(dataclasses.replace(old, name=keep))
        return new

    def names(self, ref: str | Reference | ImageRecord) -> builtins.list[ImageRecord]:
        """Every name of the image ``ref`` is (the rows sharing its id), tagged ones first."""
        rec = ref if isinstance(ref, ImageRecord) else self._find(ref)
        same = [r for r in self.db.list() if r.config == rec.config]
        return sorted(same, key=lambda r: (not is_tagged(r.name), r.name))

    def users(self, ref: str | Reference | ImageRecord) -> builtins.list[str]:
        """Keys of the container snapshots made from the image (container ids in kettled)."""
        rec = ref if isinstance(ref, ImageRecord) else self._find(ref)
        marks = (rec.config, rec.chain_id)
        return [key for key, mark in self._used().items() if mark in marks]

    def _used(self) -> dict[str, str]:
        """Container snapshot key -> the image id it was made from; for a snapshot made
        before the label existed, the chain id of its layers (the image id is not known)."""
        out: dict[str, str] = {}
        for info in self.snapshots.list():
            if info.kind in (ACTIVE, VIEW):
                mark = info.labels.get(IMAGE_ID_LABEL) or info.parent
                if mark:
                    out[info.key] = mark
        return out

    def unpacked_size(self, rec: ImageRecord) -> int:
        """Bytes of the image's unpacked layers (Docker's SIZE); the compressed size when the
        layers are missing."""
        try:
            return sum(i.size for i in self.snapshots.chain(rec.chain_id))
        except KettleError:
            return rec.size

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
            # Mirrors first, as containerd's hosts.toml: the same repository on another host;
            # any failure there falls through to the next one, then to the registry itself.
            # Every blob is verified against the digests either way.
            for host, _scheme in self.mirrors.get(r.registry, ()):
                try:
                    mirrored = dataclasses.replace(r, registry=host)
                    rec = self.puller.pull(mirrored, self.record_name(r), plat, progress, stats)
                    return self._put(rec)
                except KettleError as e:
                    log.warning("pull %s: mirror %s: %s; trying the next", r, host, e)
            rec = self.puller.pull(r, self.record_name(r), plat, progress, stats)
            return self._put(rec)

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
        return self._put(new)

    def remove(self, ref: str | Reference, *, gc: bool = True) -> None:
        """Forget a name; its blobs and layers go when nothing else uses them (now, with gc)."""
        rec = self._find(ref)
        self.db.delete(rec.name)
        if gc:
            self.gc()

    def untag(self, name: str) -> None:
        """Forget one stored name exactly as listed; nothing is collected."""
        self.db.delete(name)

    def prune(self, *, all_unused: bool = False) -> PruneResult:
        """Forget images that have no tag (with all_unused: every image) and that no container
        snapshot uses, then collect garbage."""
        groups: dict[str, builtins.list[ImageRecord]] = {}
        for rec in self.db.list():
            groups.setdefault(rec.config, []).append(rec)
        used = set(self._used().values())
        result = PruneResult()
        for image_id, recs in groups.items():
            if not all_unused and any(is_tagged(r.name) for r in recs):
                continue
            if image_id in used or any(r.chain_id in used for r in recs):
                continue
            for r in recs:
                with contextlib.suppress(NotFound):  # a concurrent rmi got there first
                    self.db.delete(r.name)
                    result.untagged.append(r.name)
            result.deleted.append(image_id)
        sizes = {i.key: i.size for i in self.snapshots.list()}
        result.gc = self.gc()
        result.reclaimed = result.gc.bytes_freed + sum(
            sizes.get(k, 0) for k in result.gc.snapshots_removed
        )
        return result

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
            labels = {"image": rec.name, IMAGE_ID_LABEL: rec.config}
            return self.snapshots.prepare(key, rec.chain_id, labels)

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
            return [self._put(r) for r in recs]

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


def mirror_hosts(
    mirrors: Iterable[tuple[str, Iterable[str]]],
) -> dict[str, list[tuple[str, str]]]:
    """registry -> [(host, scheme)] from endpoints like "http://h:5000" or "https://h"."""
    out: dict[str, list[tuple[str, str]]] = {}
    for registry, endpoints in mirrors:
        for endpoint in endpoints:
            scheme, sep, rest = endpoint.partition("://")
            host = rest.rstrip("/")
            if not sep or scheme not in ("http", "https") or not host or "/" in host:
                raise InvalidArgument(
                    f"registry mirror {endpoint!r} for {registry}: use http://host[:port] "
                    "or https://host[:port]"
                )
            out.setdefault(registry, []).append((host, scheme))
    return out
