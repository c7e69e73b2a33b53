"""Pulling an image: resolve, fetch config, then download and unpack layers in parallel.

Each layer runs in a thread of its own: bytes come off the socket, are hashed and appended to the
content store's partial file, and are decompressed and unpacked into the layer's snapshot in the
same pass.  Layers unpack independently (each into its own directory), so their order does not
serialise them; the main thread then verifies and commits them bottom-up.  A dropped connection
resumes with a Range request, and a failed pull leaves its partial downloads for the next one.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from kettle.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    KettleError,
    NotFound,
    ResourceExhausted,
    SyscallError,
    Unavailable,
    Unimplemented,
)
from kettle.image import mediatypes as mt
from kettle.image.config import ImageConfig, parse_config
from kettle.image.content import ContentStore, Ingest
from kettle.image.decompress import decompressor
from kettle.image.digest import chain_ids
from kettle.image.manifest import (
    Descriptor,
    Manifest,
    check_config_platform,
    parse_index,
    parse_manifest,
    reject_schema1,
    select_manifest,
)
from kettle.image.metadata import ImageRecord
from kettle.image.platform import Platform
from kettle.image.reference import Reference
from kettle.image.registry import BlobStream, RegistryClient
from kettle.snapshot.apply import ApplyLimits, apply_layer
from kettle.snapshot.crosscheck import check_layer_parents, inherit_implicit_dirs
from kettle.snapshot.store import Extraction, Snapshotter

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PullEvent:
    """Progress of a pull.

    kind: ``resolved`` (digest: the target), then per layer ``exists`` (already in the
    store), ``waiting`` (queued for a download slot), ``resume`` and ``download`` (bytes so
    far of ``total``), ``verifying`` (all bytes in; digests being checked), ``unpacking``
    (being committed, or unpacked from a blob already stored), ``unpacked`` (committed); and
    ``done`` (digest: the target) at the end."""

    kind: str
    digest: str
    done: int = 0
    total: int = 0


Progress = Callable[[PullEvent], None]


@dataclass
class PullStats:
    downloaded: int = 0
    resumed_from: int = 0
    layers_unpacked: int = 0
    layers_reused: int = 0
    seconds: float = 0.0


@dataclass
class _Job:
    index: int
    desc: Descriptor
    diff_id: str
    chain_id: str
    parent: str | None
    what: str = field(init=False)

    def __post_init__(self) -> None:
        self.what = f"layer {self.desc.digest}"


@dataclass
class _Done:
    extraction: Extraction | None = None
    parents: set[str] = field(default_factory=set)
    implicit: set[str] = field(default_factory=set)
    size: int = 0


class _Source:
    """The compressed bytes of a layer: what an earlier pull left on disk, then the network."""

    def __init__(
        self,
        ingest: Ingest,
        stream: BlobStream | None,
        cancel: threading.Event,
        progress: Progress | None,
        stats: PullStats,
        lock: threading.Lock,
    ) -> None:
        self.ingest = ingest
        self.stream = stream
        self.cancel = cancel
        self.progress = progress
        self.stats = stats
        self.lock = lock
        self._replay: Iterator[bytes] | None = ingest.replay() if ingest.offset else None
        self._buf = bytearray(_CHUNK)

    def read(self, n: int) -> bytes:
        if self._replay is not None:
            chunk = next(self._replay, None)
            if chunk is not None:
                return chunk
            self._replay = None
        if self.cancel.is_set():
            raise Cancelled(f"{self.ingest.digest}: pull cancelled")
        if self.stream is None:
            return b""
        view = memoryview(self._buf)[: min(n, _CHUNK)]
        got = self.stream.readinto(view)
        if not got:
            return b""
        data = bytes(view[:got])
        self.ingest.write(data)
        with self.lock:
            self.stats.downloaded += got
        if self.progress is not None:
            offset, size = self.ingest.offset, self.ingest.size
            self.progress(PullEvent("download", self.ingest.digest, offset, size))
            if offset >= size:
                self.progress(PullEvent("verifying", self.ingest.digest, offset, size))
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class _FileSource:
    def __init__(self, path: str) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 (closed by the caller)

    def read(self, n: int) -> bytes:
        return self.f.read(n)

    def drain(self) -> None:
        pass

    def close(self) -> None:
        self.f.close()


class Puller:
    def __init__(
        self,
        client: RegistryClient,
        content: ContentStore,
        snapshots: Snapshotter,
        *,
        limits: ApplyLimits | None = None,
        max_parallel: int = 4,
    ) -> None:
        self.client = client
        self.content = content
        self.snapshots = snapshots
        self.limits = limits or ApplyLimits()
        self.max_parallel = max(1, max_parallel)

    # --- resolve ----------------------------------------------------------------------------

    def resolve(
        self, ref: Reference, platform: Platform
    ) -> tuple[str, str, bytes, str, bytes, Manifest]:
        """(target digest, media type, body; platform manifest digest, body, parsed)."""
        body, media_type, digest = self.client.get_manifest(ref, ref.object)
        what = f"image {ref}"
        if ref.digest and digest != ref.digest:
            raise InvalidArgument(f"{what}: registry returned {digest}")
        reject_schema1(media_type, what)
        if media_type in mt.INDEXES:
            index = parse_index(body, media_type, what)
            desc = select_manifest(index, platform, what)
            if desc.media_type in mt.INDEXES:
                raise Unimplemented(f"{what}: nested index {desc.digest} is not supported")
            mbody, mtype, mdigest = self.client.get_manifest(ref, desc.digest)
            if len(mbody) != desc.size:
                raise InvalidArgument(f"{what}: manifest {desc.digest} size differs from the index")
            manifest = parse_manifest(
                mbody, mtype if mtype in mt.MANIFESTS else desc.media_type, what
            )
            return digest, media_type, body, mdigest, mbody, manifest
        manifest = parse_manifest(body, media_type, what)
        return digest, media_type, body, digest, body, manifest

    # --- pull -------------------------------------------------------------------------------

    def pull(
        self,
        ref: Reference,
        name: str,
        platform: Platform,
        progress: Progress | None = None,
        stats: PullStats | None = None,
    ) -> ImageRecord:
        start = time.monotonic()
        stats = stats if stats is not None else PullStats()
        what = f"image {ref}"
        target, target_type, target_body, mdigest, mbody, manifest = self.resolve(ref, platform)
        if progress:
            progress(PullEvent("resolved", target))
        cdesc = manifest.config
        if self.content.has(cdesc.digest, cdesc.size):
            cbody = self.content.read(cdesc.digest)
        else:
            cbody = self.client.get_blob(ref, cdesc.digest, cdesc.size)
        config = parse_config(cbody, f"{what} config")
        if target_type not in mt.INDEXES:
            check_config_platform(config.os, config.architecture, config.variant, platform, what)
        self._check_space(manifest, what)
        chain = self._run_layers(ref, manifest, config, progress, stats)
        # Small blobs last, so everything the image row points at exists when it is written.
        self.content.write(cdesc.digest, cbody)
        self.content.write(mdigest, mbody)
        self.content.write(target, target_body)
        stats.seconds = time.monotonic() - start
        if progress:
            progress(PullEvent("done", target))
        return ImageRecord(
            name=name,
            target=target,
            target_media_type=target_type,
            manifest=mdigest,
            config=cdesc.digest,
            chain_id=chain[-1] if chain else None,
            platform=str(Platform(config.os, config.architecture, config.variant)),
            size=sum(d.size for d in manifest.layers),
            created=0.0,
            updated=0.0,
        )

    def _check_space(self, manifest: Manifest, what: str) -> None:
        missing = sum(d.size for d in manifest.layers if not self.content.has(d.digest, d.size))
        st = os.statvfs(self.content.root)
        free = st.f_bavail * st.f_frsize
        need = missing + self.limits.free_space_margin
        if missing and free < need:
            raise ResourceExhausted(
                f"{what}: needs {missing} bytes for layers plus a margin of"
                f" {self.limits.free_space_margin}; the store has {free} free"
            )

    def unpack_local(self, manifest: Manifest, config: ImageConfig, what: str) -> list[str]:
        """Unpack layers whose blobs are already in the content store (imports); chain ids."""
        for d in manifest.layers:
            if not self.content.has(d.digest, d.size):
                raise NotFound(f"{what}: layer blob {d.digest} is not in the store")
        return self._run_layers(None, manifest, config, None, PullStats(), what)

    def _run_layers(
        self,
        ref: Reference | None,
        manifest: Manifest,
        config: ImageConfig,
        progress: Progress | None,
        stats: PullStats,
        what: str = "",
    ) -> list[str]:
        what = what or f"image {ref}"
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"{what}: config lists {len(config.diff_ids)} diff ids for"
                f" {len(manifest.layers)} layers"
            )
        chain = chain_ids(config.diff_ids)
        jobs = [
            _Job(i, d, config.diff_ids[i], chain[i], chain[i - 1] if i else None)
            for i, d in enumerate(manifest.layers)
        ]
        cancel = threading.Event()
        lock = threading.Lock()
        todo = [j for j in jobs if not self._present(j)]
        stats.layers_reused += len(jobs) - len(todo)
        if progress:
            for j in jobs:
                if j not in todo:
                    progress(PullEvent("exists", j.desc.digest, j.desc.size, j.desc.size))
        if not todo:
            return chain
        if progress:
            for j in todo:
                progress(PullEvent("waiting", j.desc.digest, 0, j.desc.size))
        futures: dict[int, Future[_Done]] = {}
        with ThreadPoolExecutor(
            max_workers=min(self.max_parallel, len(todo)), thread_name_prefix="kettle-pull"
        ) as pool:
            for j in todo:
                futures[j.index] = pool.submit(self._layer, ref, j, cancel, progress, stats, lock)
            try:
                for j in jobs:
                    fut = futures.get(j.index)
                    if fut is None:
                        continue
                    done = fut.result()
                    if done.extraction is not None:
                        if progress:
                            progress(PullEvent("unpacking", j.desc.digest, 0, j.desc.size))
                        self._commit(j, done)
                        stats.layers_unpacked += 1
                    if progress:
                        progress(PullEvent("unpacked", j.desc.digest, j.desc.size, j.desc.size))
            except BaseException:
                cancel.set()
                for fut in futures.values():
                    if fut.cancel():
                        continue
                    try:
                        res = fut.result()
                    except BaseException:
                        continue
                    if res.extraction is not None:
                        res.extraction.abort()
                raise
        return chain

    def _present(self, j: _Job) -> bool:
        return self.snapshots.has_layer(j.chain_id) and self.content.has(j.desc.digest, j.desc.size)

    def _commit(self, j: _Job, done: _Done) -> None:
        ex = done.extraction
        assert ex is not None
        try:
            if j.parent is not None:
                lowers = self.snapshots.layer_dirs(j.parent)
                check_layer_parents(lowers, done.parents, j.what)
                if os.geteuid() == 0:
                    inherit_implicit_dirs(lowers, ex.path, done.implicit)
        except BaseException:
            ex.abort()
            raise
        ex.commit(done.size)

    def _layer(
        self,
        ref: Reference | None,
        j: _Job,
        cancel: threading.Event,
        progress: Progress | None,
        stats: PullStats,
        lock: threading.Lock,
    ) -> _Done:
        desc = j.desc
        compression = mt.LAYERS[desc.media_type]
        need_unpack = not self.snapshots.has_layer(j.chain_id)
        ingest = self.content.ingest(desc.digest, desc.size)
        try:
            if self.content.has(desc.digest, desc.size):
                # Another pull stored it while we waited for the ingest lock, or only the
                # snapshot was missing: unpack from the local blob.
                ingest.close()
                if not need_unpack or self.snapshots.has_layer(j.chain_id):
                    return _Done()
                if progress:
                    progress(PullEvent("unpacking", desc.digest, 0, desc.size))
                local = _FileSource(self.content.path(desc.digest))
                try:
                    return self._unpack(j, local, compression)
                finally:
                    local.close()
            if ref is None:
                raise NotFound(f"{j.what}: blob is not in the store")
            offset = ingest.open()
            if offset:
                with lock:
                    stats.resumed_from += offset
                if progress:
                    progress(PullEvent("resume", desc.digest, offset, desc.size))
            stream = (
                self.client.open_blob(ref, desc.digest, desc.size, offset)
                if offset < desc.size
                else None
            )
            source = _Source(ingest, stream, cancel, progress, stats, lock)
            try:
                if need_unpack:
                    done = self._unpack(j, source, compression, ingest)
                else:
                    source.drain()
                    self._verify_blob(ingest, j)
                    ingest.commit()
                    done = _Done()
            finally:
                if stream is not None:
                    stream.close()
            return done
        except (Unavailable, Cancelled):
            raise  # the partial download stays for the next pull to resume
        except ResourceExhausted:
            ingest.discard()  # frees the space; there is no resuming on a full disk
            raise
        except KettleError:
            ingest.discard()
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                ingest.discard()
                raise ResourceExhausted(f"{j.what}: no space left on the store") from None
            raise SyscallError("pull", exc.errno or errno.EIO, exc.filename, j.what) from None
        finally:
            ingest.close()

    def _verify_blob(self, ingest: Ingest, j: _Job) -> None:
        if ingest.offset != ingest.size:
            raise InvalidArgument(f"{j.what}: got {ingest.offset} bytes, expected {ingest.size}")
        got = f"sha256:{ingest.hash.hexdigest()}"
        if got != j.desc.digest:
            raise InvalidArgument(f"{j.what}: content has digest {got}; rejected")

    def _unpack(
        self, j: _Job, source: _Source | _FileSource, compression: str, ingest: Ingest | None = None
    ) -> _Done:
        ex = self.snapshots.begin_extract(j.chain_id, j.parent)
        try:
            fd = ex.open_fd()
            try:
                result = apply_layer(
                    decompressor(source, compression, j.what), fd, j.what, self.limits
                )
            finally:
                os.close(fd)
            source.drain()
            if ingest is not None:
                self._verify_blob(ingest, j)
            if result.diff_id != j.diff_id:
                raise InvalidArgument(
                    f"{j.what}: unpacked content has diff id {result.diff_id}, the config says"
                    f" {j.diff_id}"
                )
            if ingest is not None:
                ingest.commit()
        except BaseException:
            ex.abort()
            raise
        return _Done(ex, result.parents, result.implicit_dirs, result.data_size)


def require_layers(snapshots: Snapshotter, chain_id: str | None, what: str) -> None:
    if chain_id is not None and not snapshots.has_layer(chain_id):
        raise FailedPrecondition(f"{what}: layer {chain_id} is not unpacked; pull it again")
