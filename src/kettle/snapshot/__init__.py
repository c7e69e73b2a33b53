"""Snapshots: layers unpacked once into overlayfs lower directories keyed by chain id, and
writable snapshots for containers (overlayfs, or a copying fallback)."""

from __future__ import annotations

from kettle.snapshot.apply import ApplyLimits, ApplyResult, apply_layer
from kettle.snapshot.mounts import Mount, mount_all, unmount
from kettle.snapshot.store import SnapshotInfo, Snapshotter

__all__ = [
    "ApplyLimits",
    "ApplyResult",
    "Mount",
    "SnapshotInfo",
    "Snapshotter",
    "apply_layer",
    "mount_all",
    "unmount",
]
