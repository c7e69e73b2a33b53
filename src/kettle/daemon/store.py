"""Container metadata in SQLite (WAL), under kettled's root directory."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field

from kettle.errors import AlreadyExists, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    started_ns INTEGER NOT NULL DEFAULT 0,
    finished_ns INTEGER NOT NULL DEFAULT 0,
    pid INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    auto_remove INTEGER NOT NULL DEFAULT 0,
    shim_address TEXT NOT NULL DEFAULT ''
)
"""

CREATED = "created"
RUNNING = "running"
EXITED = "exited"


@dataclass
class Record:
    id: str
    name: str
    image: str
    spec: str
    status: str = CREATED
    exit_code: int = 0
    created_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    auto_remove: bool = False
    shim_address: str = ""

    def command(self) -> list[str]:
        args = json.loads(self.spec).get("process", {}).get("args", [])
        return [str(a) for a in args]


_COLUMNS = (
    "id, name, image, spec, status, exit_code, created_ns, started_ns, finished_ns, pid, "
    "labels, auto_remove, shim_address"
)


def _record(row: tuple[object, ...]) -> Record:
    r = list(row)
    return Record(
        id=str(r[0]),
        name=str(r[1]),
        image=str(r[2]),
        spec=str(r[3]),
        status=str(r[4]),
        exit_code=int(str(r[5])),
        created_ns=int(str(r[6])),
        started_ns=int(str(r[7])),
        finished_ns=int(str(r[8])),
        pid=int(str(r[9])),
        labels={str(k): str(v) for k, v in json.loads(str(r[10])).items()},
        auto_remove=bool(r[11]),
        shim_address=str(r[12]),
    )


class Store:
    """Thread-safe: one connection, serialized by a lock (SQLite writes serialize anyway)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, rec: Record) -> None:
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO containers ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    self._values(rec),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"container name {rec.name} is already in use") from None

    def update(self, rec: Record) -> None:
        with self._lock:
            cols = [c.strip() for c in _COLUMNS.split(",")][1:]
            sets = ", ".join(f"{c} = ?" for c in cols)
            values = self._values(rec)
            self._db.execute(f"UPDATE containers SET {sets} WHERE id = ?", (*values[1:], rec.id))

    def delete(self, container_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def all(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM containers ORDER BY created_ns DESC"
            ).fetchall()
        return [_record(r) for r in rows]

    def find(self, ref: str) -> Record:
        """By full id, name, or unique id prefix (Docker's rules)."""
        if not ref:
            raise NotFound("no such container: (empty id)")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM containers WHERE id = ? OR name = ?", (ref, ref)
            ).fetchall()
            if not rows:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM containers WHERE substr(id, 1, ?) = ?",
                    (len(ref), ref),
                ).fetchall()
        if len(rows) != 1:
            what = "no such container" if not rows else "ambiguous container id"
            raise NotFound(f"{what}: {ref}")
        return _record(rows[0])

    @staticmethod
    def _values(rec: Record) -> tuple[object, ...]:
        return (
            rec.id,
            rec.name,
            rec.image,
            rec.spec,
            rec.status,
            rec.exit_code,
            rec.created_ns,
            rec.started_ns,
            rec.finished_ns,
            rec.pid,
            json.dumps(rec.labels, sort_keys=True),
            int(rec.auto_remove),
            rec.shim_address,
        )
