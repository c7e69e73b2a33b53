"""The snapshotter: unpacked layers keyed by chain id, and writable snapshots for containers.

Layout under the root: ``metadata.db`` (SQLite) and one directory per snapshot named by a short
number, so that an overlay mount with many lower directories still fits its options in a page:

- a committed layer: ``<n>/fs`` (the layer's own files, whiteouts in overlayfs form);
- an active (writable) snapshot: ``<n>/fs`` (the upper directory) and ``<n>/work``;
- a view: no files, only its parent chain.

A layer is extracted under a temporary key and renamed to its chain id in one transaction, so
a chain id is either absent or complete; leftovers of a crash are removed by ``cleanup``.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kettle.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, SyscallError
from kettle.snapshot.copy import merge_layers
from kettle.snapshot.mounts import Mount

COMMITTED = "committed"
ACTIVE = "active"
VIEW = "view"
EXTRACTING = "extracting"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    parent TEXT,
    created REAL NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}'
);
"""


@dataclass(frozen=True)
class SnapshotInfo:
    id: int
    key: str
    kind: str
    parent: str | None
    created: float
    size: int
    labels: dict[str, str] = field(default_factory=dict, hash=False)


class Extraction:
    """A layer being unpacked; ``commit`` publishes it under its chain id."""

    def __init__(self, sn: Snapshotter, info: SnapshotInfo, chain_id: str) -> None:
        self.sn = sn
        self.info = info
        self.chain_id = chain_id
        self.path = sn.fs_path(info.id)
        self.done = False
        # Held while the extraction runs: cleanup() of another process leaves it alone.
        self._lock_fd = os.open(
            os.path.join(sn.dir_path(info.id), "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def open_fd(self) -> int:
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def commit(self, size: int) -> bool:
        """Publish; False when another pull committed the same chain id first (ours is dropped)."""
        try:
            ok = self.sn._commit_extraction(self, size)
        finally:
            self._unlock()
        self.done = True
        return ok

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self._unlock()
            self.sn._drop(self.info)


class Snapshotter:
    def __init__(self, root: str, driver: str = "auto") -> None:
        if driver not in ("auto", "overlay", "copy"):
            raise InvalidArgument(f"snapshot driver {driver!r}: expected auto, overlay or copy")
        self.root = root
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            os.path.join(root, "metadata.db"),
            timeout=30,
            check_same_thread=False,
            isolation_level=None,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._driver = driver
        self.rootless = os.geteuid() != 0

    # --- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _row(self, row: tuple[Any, ...] | None) -> SnapshotInfo | None:
        if row is None:
            return None
        id_, key, kind, parent, created, size, labels = row
        return SnapshotInfo(
            int(id_),
            str(key),
            str(kind),
            None if parent is None else str(parent),
            float(created),
            int(size),
            json.loads(str(labels)),
        )

    def dir_path(self, id_: int) -> str:
        return os.path.join(self.root, str(id_))

    def fs_path(self, id_: int) -> str:
        return os.path.join(self.root, str(id_), "fs")

    @property
    def driver(self) -> str:
        if self._driver == "auto":
            self._driver = "overlay" if probe_overlay(self.root) else "copy"
        return self._driver

    # --- queries ------------------------------------------------------------------------------

    def stat(self, key: str) -> SnapshotInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, key, kind, parent, created, size, labels FROM snapshots WHERE key=?",
                (key,),
            ).fetchone()
        return self._row(row)

    def get(self, key: str) -> SnapshotInfo:
        info = self.stat(key)
        if info is None:
            raise NotFound(f"snapshot {key} not found")
        return info

    def list(self) -> builtins.list[SnapshotInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, key, kind, parent, created, size, labels FROM snapshots ORDER BY id"
            ).fetchall()
        return [i for i in (self._row(r) for r in rows) if i is not None]

    def has_layer(self, chain_id: str) -> bool:
        info = self.stat(chain_id)
        return info is not None and info.kind == COMMITTED

    def chain(self, key: str | None) -> builtins.list[SnapshotInfo]:
        """The committed layers from ``key`` down to the base, top first."""
        out: builtins.list[SnapshotInfo] = []
        while key is not None:
            info = self.get(key)
            if info.kind != COMMITTED:
                raise FailedPrecondition(f"snapshot {key} is {info.kind}, not a committed layer")
            out.append(info)
            key = info.parent
        return out

    def layer_dirs(self, chain_id: str | None) -> builtins.list[str]:
        """Directories of the layers of chain_id, lowest first."""
        return [self.fs_path(i.id) for i in reversed(self.chain(chain_id))]

    # --- layers -------------------------------------------------------------------------------

    def begin_extract(self, chain_id: str, parent: str | None) -> Extraction:
        key = f"extract-{uuid.uuid4().hex}"
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO snapshots (key, kind, parent, created) VALUES (?, ?, ?, ?)",
                (key, EXTRACTING, parent, time.time()),
            )
            id_ = int(cur.lastrowid or 0)
        path = self.fs_path(id_)
        os.makedirs(path, mode=0o755)
        os.chmod(self.dir_path(id_), 0o700)
        info = self.get(key)
        return Extraction(self, info, chain_id)

    def _commit_extraction(self, ex: Extraction, size: int) -> bool:
        with self._tx() as db:
            if ex.info.parent is not None:
                p = db.execute(
                    "SELECT kind FROM snapshots WHERE key=?", (ex.info.parent,)
                ).fetchone()
                if p is None or p[0] != COMMITTED:
                    raise FailedPrecondition(
                        f"layer {ex.chain_id}: parent {ex.info.parent} is not committed"
                    )
            exists = db.execute("SELECT 1 FROM snapshots WHERE key=?", (ex.chain_id,)).fetchone()
            if exists is None:
                db.execute(
                    "UPDATE snapshots SET key=?, kind=?, size=?, created=? WHERE id=?",
                    (ex.chain_id, COMMITTED, size, time.time(), ex.info.id),
                )
                return True
        self._drop(ex.info)
        return False

    def _drop(self, info: SnapshotInfo) -> None:
        # Files first: a row without files is harmless, files without a row are found by cleanup.
        shutil.rmtree(self.dir_path(info.id), ignore_errors=True)
        with self._tx() as db:
            db.execute("DELETE FROM snapshots WHERE id=?", (info.id,))

    # --- containers ---------------------------------------------------------------------------

    def prepare(
        self, key: str, parent: str | None, labels: dict[str, str] | None = None
    ) -> builtins.list[Mount]:
        """A writable snapshot over the layers of ``parent``; its mounts."""
        return self._create(key, parent, ACTIVE, labels)

    def view(
        self, key: str, parent: str, labels: dict[str, str] | None = None
    ) -> builtins.list[Mount]:
        """A read-only snapshot of ``parent``."""
        return self._create(key, parent, VIEW, labels)

    def _create(
        self, key: str, parent: str | None, kind: str, labels: dict[str, str] | None
    ) -> builtins.list[Mount]:
        if not key or "/" in key or key.startswith("extract-") or key.startswith("sha256:"):
            raise InvalidArgument(f"snapshot key {key!r} is not allowed")
        lowers = self.layer_dirs(parent)
        driver = self.driver
        with self._tx() as db:
            if db.execute("SELECT 1 FROM snapshots WHERE key=?", (key,)).fetchone():
                raise AlreadyExists(f"snapshot {key} already exists")
            cur = db.execute(
                "INSERT INTO snapshots (key, kind, parent, created, labels) VALUES (?,?,?,?,?)",
                (key, kind, parent, time.time(), json.dumps(labels or {})),
            )
            id_ = int(cur.lastrowid or 0)
        try:
            d = self.dir_path(id_)
            os.makedirs(d, mode=0o700)
            if kind == ACTIVE or driver == "copy":
                os.mkdir(os.path.join(d, "fs"), 0o755)
            if kind == ACTIVE and driver == "overlay":
                os.mkdir(os.path.join(d, "work"), 0o700)
            if driver == "copy":
                merge_layers(lowers, os.path.join(d, "fs"), self.rootless)
        except BaseException:
            self._drop(self.get(key))
            raise
        return self.mounts(key)

    def mounts(self, key: str) -> builtins.list[Mount]:
        info = self.get(key)
        if info.kind not in (ACTIVE, VIEW):
            raise FailedPrecondition(f"snapshot {key} is {info.kind}; prepare or view one")
        d = self.dir_path(info.id)
        ro = info.kind == VIEW
        if self.driver == "copy":
            return [Mount("bind", os.path.join(d, "fs"), ("rbind", "ro" if ro else "rw"))]
        lowers = list(reversed(self.layer_dirs(info.parent)))  # top first, as overlay wants
        if not ro:
            if not lowers:
                return [Mount("bind", os.path.join(d, "fs"), ("rbind", "rw"))]
            opts = [
                "index=off",
                f"lowerdir={':'.join(lowers)}",
                f"upperdir={os.path.join(d, 'fs')}",
                f"workdir={os.path.join(d, 'work')}",
            ]
            if self.rootless:
                opts.append("userxattr")
            return [Mount("overlay", "overlay", tuple(opts))]
        if len(lowers) == 1:
            return [Mount("bind", lowers[0], ("rbind", "ro"))]
        return [Mount("overlay", "overlay", ("ro", "index=off", f"lowerdir={':'.join(lowers)}"))]

    def remove(self, key: str) -> None:
        info = self.get(key)
        with self._lock:
            child = self._db.execute(
                "SELECT key FROM snapshots WHERE parent=? LIMIT 1", (key,)
            ).fetchone()
        if child is not None:
            raise FailedPrecondition(f"snapshot {key} has a child {child[0]}")
        self._drop(info)

    def usage(self, key: str) -> int:
        """Bytes used by the snapshot's own files (its upper directory for an active one)."""
        info = self.get(key)
        total = 0
        for dirpath, dirnames, filenames in os.walk(self.dir_path(info.id)):
            for name in filenames + dirnames:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
        return total

    def cleanup(self) -> int:
        """Remove extractions left by a crash and directories that have no row."""
        removed = 0
        for info in self.list():
            if info.kind == EXTRACTING and not self._extraction_alive(info):
                self._drop(info)
                removed += 1
        # Directories are listed before rows: a snapshot's row is written before its directory,
        # so a directory seen here that has no row afterwards is a leftover.
        names = os.listdir(self.root)
        ids = {str(i.id) for i in self.list()}
        for name in names:
            if name.isdigit() and name not in ids:
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
                removed += 1
        return removed

    def _extraction_alive(self, info: SnapshotInfo) -> bool:
        try:
            fd = os.open(os.path.join(self.dir_path(info.id), "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # Between the row and the lock file, or a crash right there: young means starting.
            return time.time() - info.created < 60
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def probe_overlay(root: str) -> bool:
    """Whether an overlay mount works on this file system and with these privileges."""
    from kettle import syscalls

    base = os.path.join(root, f"probe-{uuid.uuid4().hex[:12]}")
    dirs = {n: os.path.join(base, n) for n in ("l1", "l2", "u", "w", "m")}
    try:
        for d in dirs.values():
            os.makedirs(d)
        opts = f"lowerdir={dirs['l1']}:{dirs['l2']},upperdir={dirs['u']},workdir={dirs['w']}"
        try:
            syscalls.mount("overlay", dirs["m"], "overlay", 0, opts)
        except SyscallError:
            # No CAP_SYS_ADMIN, no overlay in the kernel, or a file system overlay cannot use
            # as upper (e.g. an overlay itself): unpacked layers are copied instead.
            return False
        syscalls.umount2(dirs["m"], syscalls.MNT_DETACH)
        return True
    finally:
        shutil.rmtree(base, ignore_errors=True)
