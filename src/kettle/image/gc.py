"""Garbage collection: blobs and layers that no image or container snapshot refers to."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kettle.errors import KettleError
from kettle.image.config import parse_config
from kettle.image.content import ContentStore
from kettle.image.digest import chain_ids
from kettle.image.manifest import detect_media_type, parse_manifest
from kettle.image.metadata import ImageDB
from kettle.snapshot.store import COMMITTED, Snapshotter

log = logging.getLogger(__name__)


@dataclass
class GCResult:
    blobs_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    snapshots_removed: list[str] = field(default_factory=list)
    ingests_removed: int = 0


def live_sets(
    db: ImageDB, content: ContentStore, snapshots: Snapshotter
) -> tuple[set[str], set[str]]:
    """(blob digests, snapshot keys) still referred to."""
    blobs: set[str] = set()
    keys: set[str] = set()
    for rec in db.list():
        blobs.update((rec.target, rec.manifest, rec.config))
        what = f"image {rec.name}"
        try:
            body = content.read(rec.manifest)
            manifest = parse_manifest(body, detect_media_type(body, "", what), what)
            blobs.update(d.digest for d in manifest.layers)
            config = parse_config(content.read(rec.config), f"{what} config")
            keys.update(chain_ids(config.diff_ids))
        except KettleError as exc:
            # A damaged image keeps what it names; `verify` reports it.
            log.warning("gc: %s", exc)
    for info in snapshots.list():
        if info.kind != COMMITTED and info.parent is not None:
            key: str | None = info.parent
            while key is not None and key not in keys:
                keys.add(key)
                parent = snapshots.stat(key)
                key = parent.parent if parent is not None else None
    return blobs, keys


def collect(
    db: ImageDB, content: ContentStore, snapshots: Snapshotter, ingest_max_age: float = 86400.0
) -> GCResult:
    """Remove what nothing refers to.  The caller holds the store's exclusive lock."""
    result = GCResult()
    blobs, keys = live_sets(db, content, snapshots)
    for digest, size in list(content.list()):
        if digest not in blobs:
            content.delete(digest)
            result.blobs_removed.append(digest)
            result.bytes_freed += size
    # Leaves first: a layer is removed only once nothing is stacked on it.
    while True:
        infos = snapshots.list()
        parents = {i.parent for i in infos if i.parent is not None}
        victims = [
            i for i in infos if i.kind == COMMITTED and i.key not in keys and i.key not in parents
        ]
        if not victims:
            break
        for info in victims:
            snapshots.remove(info.key)
            result.snapshots_removed.append(info.key)
    snapshots.cleanup()
    result.ingests_removed = content.clean_ingests(ingest_max_age)
    return result
