"""Container metadata in SQLite (WAL), under kettled's root directory."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

from kettle.errors import AlreadyExists, NotFound

CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
#: waiting out a restart back-off (shown as CrashLoopBackOff).
RESTARTING = "restarting"
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
    #: the CreateContainerRequest, as kettle.api.convert.to_dict made it (JSON).
    config: str = "{}"
    restart_count: int = 0
    #: exit, signal, oom or lost: how the last run ended.
    last_exit_reason: str = ""
    next_restart_ns: int = 0
    stopped_by_user: bool = False
    oom_killed: bool = False
    #: JSON of kettle.daemon health state ("" when no check).
    health: str = ""
    group: str = ""
    #: restarts in a row without a run long enough to reset the back-off.
    streak: int = 0

    def command(self) -> list[str]:
        args = json.loads(self.spec).get("process", {}).get("args", [])
        return [str(a) for a in args]


# (column, SQL type and default, to-db, from-db) in Record's field order after id.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "TEXT PRIMARY KEY"),
    ("name", "TEXT NOT NULL UNIQUE"),
    ("image", "TEXT NOT NULL"),
    ("spec", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL"),
    ("exit_code", "INTEGER NOT NULL DEFAULT 0"),
    ("created_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("started_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("finished_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("pid", "INTEGER NOT NULL DEFAULT 0"),
    ("labels", "TEXT NOT NULL DEFAULT '{}'"),
    ("auto_remove", "INTEGER NOT NULL DEFAULT 0"),
    ("shim_address", "TEXT NOT NULL DEFAULT ''"),
    ("config", "TEXT NOT NULL DEFAULT '{}'"),
    ("restart_count", "INTEGER NOT NULL DEFAULT 0"),
    ("last_exit_reason", "TEXT NOT NULL DEFAULT ''"),
    ("next_restart_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("stopped_by_user", "INTEGER NOT NULL DEFAULT 0"),
    ("oom_killed", "INTEGER NOT NULL DEFAULT 0"),
    ("health", "TEXT NOT NULL DEFAULT ''"),
    ("grp", "TEXT NOT NULL DEFAULT ''"),
    ("streak", "INTEGER NOT NULL DEFAULT 0"),
)
_NAMES = [c for c, _t in _COLUMNS]
_SELECT = ", ".join(_NAMES)
_BOOLS = {"auto_remove", "stopped_by_user", "oom_killed"}
_INTS = {
    "exit_code", "created_ns", "started_ns", "finished_ns", "pid", "restart_count",
    "next_restart_ns", "streak",
}  # fmt: skip


def _attr(column: str) -> str:
    return "group" if column == "grp" else column


def _record(row: tuple[Any, ...]) -> Record:
    kw: dict[str, Any] = {}
    for column, value in zip(_NAMES, row, strict=True):
        if column == "labels":
            kw["labels"] = {str(k): str(v) for k, v in json.loads(str(value)).items()}
        elif column in _BOOLS:
            kw[column] = bool(value)
        elif column in _INTS:
            kw[column] = int(value)
        else:
            kw[_attr(column)] = str(value)
    return Record(**kw)


def _values(rec: Record) -> tuple[object, ...]:
    out: list[object] = []
    for column in _NAMES:
        value = getattr(rec, _attr(column))
        if column == "labels":
            value = json.dumps(value, sort_keys=True)
        elif column in _BOOLS:
            value = int(value)
        out.append(value)
    return tuple(out)


class Store:
    """Thread-safe: one connection, serialized by a lock (SQLite writes serialize anyway)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        columns = ",\n".join(f"{c} {t}" for c, t in _COLUMNS)
        self._db.execute(f"CREATE TABLE IF NOT EXISTS containers (\n{columns}\n)")
        # A database from an older kettled: add the columns it lacks (their defaults apply).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, replicas INTEGER NOT NULL,"
            " template TEXT NOT NULL, created_ns INTEGER NOT NULL)"
        )
        have = {row[1] for row in self._db.execute("PRAGMA table_info(containers)")}
        for column, sqltype in _COLUMNS:
            if column not in have:
                self._db.execute(f"ALTER TABLE containers ADD COLUMN {column} {sqltype}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, rec: Record) -> None:
        marks = ",".join("?" * len(_NAMES))
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO containers ({_SELECT}) VALUES ({marks})", _values(rec)
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"container name {rec.name} is already in use") from None

    def update(self, rec: Record) -> None:
        sets = ", ".join(f"{c} = ?" for c in _NAMES[1:])
        values = _values(rec)
        with self._lock:
            try:
                self._db.execute(
                    f"UPDATE containers SET {sets} WHERE id = ?", (*values[1:], rec.id)
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"container name {rec.name} is already in use") from None

    def set_health(self, container_id: str, text: str) -> None:
        """One column: a health check's result never writes back a stale status."""
        with self._lock:
            self._db.execute("UPDATE containers SET health = ? WHERE id = ?", (text, container_id))

    def delete(self, container_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def all(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SELECT} FROM containers ORDER BY created_ns DESC"
            ).fetchall()
        return [_record(r) for r in rows]

    def get(self, container_id: str) -> Record | None:
        """By full id only; None when it is gone."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_SELECT} FROM containers WHERE id = ?", (container_id,)
            ).fetchone()
        return None if row is None else _record(row)

    def find(self, ref: str) -> Record:
        """By full id, name, or unique id prefix (Docker's rules)."""
        if not ref:
            raise NotFound("no such container: (empty id)")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SELECT} FROM containers WHERE id = ? OR name = ?", (ref, ref)
            ).fetchall()
            if not rows:
                rows = self._db.execute(
                    f"SELECT {_SELECT} FROM containers WHERE substr(id, 1, ?) = ?",
                    (len(ref), ref),
                ).fetchall()
        if len(rows) != 1:
            what = "no such container" if not rows else "ambiguous container id"
            raise NotFound(f"{what}: {ref}")
        return _record(rows[0])

    # -- replica groups ------------------------------------------------------------------------

    def put_group(self, group: GroupRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO groups (name, replicas, template, created_ns)"
                " VALUES (?,?,?,?)",
                (group.name, group.replicas, group.template, group.created_ns),
            )

    def get_group(self, name: str) -> GroupRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, replicas, template, created_ns FROM groups WHERE name = ?", (name,)
            ).fetchone()
        return (
            None if row is None else GroupRecord(str(row[0]), int(row[1]), str(row[2]), int(row[3]))
        )

    def groups(self) -> list[GroupRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, replicas, template, created_ns FROM groups ORDER BY name"
            ).fetchall()
        return [GroupRecord(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]

    def delete_group(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM groups WHERE name = ?", (name,))


@dataclass
class GroupRecord:
    name: str
    replicas: int
    #: the members' CreateContainerRequest (kettle.api.convert.to_dict, JSON).
    template: str
    created_ns: int
