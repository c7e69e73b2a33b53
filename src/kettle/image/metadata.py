"""Image metadata in SQLite: name -> target digest, manifest, config and top chain id.

An image row is written in one statement after everything it refers to is in the store, so a
listed image is always complete.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from kettle.errors import NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    target_media_type TEXT NOT NULL,
    manifest TEXT NOT NULL,
    config TEXT NOT NULL,
    chain_id TEXT,
    platform TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class ImageRecord:
    #: the normalised reference (``docker.io/library/busybox:latest`` or ``name@sha256:...``).
    name: str
    #: digest of what the name points at in the registry (an index or a manifest).
    target: str
    target_media_type: str
    #: the platform manifest that was pulled.
    manifest: str
    config: str
    #: chain id of the top layer; None for an image without layers.
    chain_id: str | None
    platform: str
    #: compressed size of the manifest's layers.
    size: int
    created: float
    updated: float


class ImageDB:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _rec(row: tuple[Any, ...]) -> ImageRecord:
        return ImageRecord(*row)

    def put(self, rec: ImageRecord) -> ImageRecord:
        now = time.time()
        with self._lock:
            old = self._db.execute(
                "SELECT created FROM images WHERE name=?", (rec.name,)
            ).fetchone()
            created = float(old[0]) if old else now
            rec = ImageRecord(
                rec.name,
                rec.target,
                rec.target_media_type,
                rec.manifest,
                rec.config,
                rec.chain_id,
                rec.platform,
                rec.size,
                created,
                now,
            )
            self._db.execute(
                "INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.name,
                    rec.target,
                    rec.target_media_type,
                    rec.manifest,
                    rec.config,
                    rec.chain_id,
                    rec.platform,
                    rec.size,
                    rec.created,
                    rec.updated,
                ),
            )
        return rec

    def get(self, name: str) -> ImageRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"image {name} not found")
        return self._rec(row)

    def find(self, name: str) -> ImageRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE name=?", (name,)).fetchone()
        return None if row is None else self._rec(row)

    def list(self) -> builtins.list[ImageRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM images ORDER BY name").fetchall()
        return [self._rec(r) for r in rows]

    def delete(self, name: str) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM images WHERE name=?", (name,))
        if cur.rowcount == 0:
            raise NotFound(f"image {name} not found")
