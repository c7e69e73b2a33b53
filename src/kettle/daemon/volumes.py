"""Named and anonymous volumes: directories under <kettled root>/volumes/<name>/_data.

Each volume keeps its metadata in <name>/meta.json next to _data, written atomically, so the
directory listing is the store.  One lock serialises creation and removal within kettled;
a volume being removed is first renamed aside, so that a crash mid-way never leaves a
half-deleted volume listed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field

from kettle.errors import InvalidArgument, NotFound

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_META = "meta.json"
_DATA = "_data"
_TRASH = ".removing-"

#: Mount option kctl puts on an anonymous volume of a `run --rm` container: the volume goes
#: with the container (Docker's --rm).  kettled strips it from the spec.
REMOVE_WITH_CONTAINER = "x-kettle-remove-with-container"


@dataclass
class Volume:
    name: str
    mountpoint: str
    created_ns: int
    labels: dict[str, str] = field(default_factory=dict)
    #: made for one container's `-v /path` (its id), not by name
    anonymous_for: str = ""
    #: removed when that container is removed
    remove_with_container: bool = False


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(
            f"volume name {name!r}: use 2 or more letters, digits, _ . - (not starting with _ . -)"
        )
    return name


class VolumeStore:
    def __init__(self, root: str) -> None:
        #: <kettled root>/volumes
        self.root = root
        self._lock = threading.Lock()
        os.makedirs(root, mode=0o700, exist_ok=True)

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self.root, name, _DATA)

    def _read(self, name: str) -> Volume | None:
        try:
            with open(os.path.join(self._dir(name), _META)) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        return Volume(
            name=name,
            mountpoint=self.mountpoint(name),
            created_ns=int(raw.get("created_ns", 0)),
            labels=dict(raw.get("labels") or {}),
            anonymous_for=str(raw.get("anonymous_for", "")),
            remove_with_container=bool(raw.get("remove_with_container", False)),
        )

    def _write(self, vol: Volume) -> None:
        path = os.path.join(self._dir(vol.name), _META)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "created_ns": vol.created_ns,
                    "labels": vol.labels,
                    "anonymous_for": vol.anonymous_for,
                    "remove_with_container": vol.remove_with_container,
                },
                f,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _make(
        self, name: str, labels: dict[str, str], anonymous_for: str, remove_with: bool
    ) -> Volume:
        vol = Volume(
            name=name,
            mountpoint=self.mountpoint(name),
            created_ns=time.time_ns(),
            labels=dict(labels),
            anonymous_for=anonymous_for,
            remove_with_container=remove_with,
        )
        # meta.json last: a directory without it (a crash here) is not a volume yet.
        os.makedirs(vol.mountpoint, mode=0o755, exist_ok=True)
        os.chmod(self._dir(name), 0o701)  # as Docker: others may reach _data, not list
        self._write(vol)
        return vol

    def create(self, name: str, labels: dict[str, str] | None = None) -> tuple[Volume, bool]:
        """The volume `name`, made if missing; and whether it was made now."""
        check_name(name)
        with self._lock:
            vol = self._read(name)
            if vol is not None:
                return vol, False
            return self._make(name, labels or {}, "", False), True

    def create_anonymous(self, container_id: str, remove_with_container: bool) -> Volume:
        with self._lock:
            return self._make(secrets.token_hex(32), {}, container_id, remove_with_container)

    def get(self, name: str) -> Volume:
        vol = self._read(name) if _NAME.match(name) else None
        if vol is None:
            raise NotFound(f"no such volume: {name}")
        return vol

    def all(self) -> list[Volume]:
        out = []
        for name in sorted(os.listdir(self.root)):
            if name.startswith(_TRASH) or not _NAME.match(name):
                continue
            vol = self._read(name)
            if vol is not None:
                out.append(vol)
        return out

    def remove(self, name: str) -> Volume:
        with self._lock:
            vol = self.get(name)
            trash = os.path.join(self.root, f"{_TRASH}{name}-{secrets.token_hex(4)}")
            os.rename(self._dir(name), trash)
        shutil.rmtree(trash)
        return vol

    def anonymous_of(self, container_id: str) -> list[Volume]:
        return [v for v in self.all() if v.anonymous_for == container_id]

    def remove_anonymous_of(self, container_id: str) -> None:
        """Drop the anonymous volumes made for a container whose create failed."""
        for vol in self.anonymous_of(container_id):
            self.remove(vol.name)

    def sweep(self) -> None:
        """Finish removals a crash interrupted."""
        for name in os.listdir(self.root):
            if name.startswith(_TRASH):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)


_stores: dict[str, VolumeStore] = {}
_stores_lock = threading.Lock()


def for_root(kettled_root: str) -> VolumeStore:
    """The one store of the kettled whose root this is (made on first use)."""
    with _stores_lock:
        store = _stores.get(kettled_root)
        if store is None:
            store = _stores[kettled_root] = VolumeStore(os.path.join(kettled_root, "volumes"))
            store.sweep()
        return store
