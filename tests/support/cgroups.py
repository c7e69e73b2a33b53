"""Locating a container process's cgroup files on the host (cgroup v1, v2 and hybrid)."""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")

# v1 file name -> v2 file name for the limits the tests check.
V2_NAMES = {
    "memory.limit_in_bytes": "memory.max",
    "memory.soft_limit_in_bytes": "memory.low",
    "pids.max": "pids.max",
    "cpu.shares": "cpu.weight",
    "cpu.cfs_quota_us": "cpu.max",
    "freezer.state": "cgroup.freeze",
}


def is_pure_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def cgroup_file(pid: int, controller: str, v1_name: str) -> Path:
    """The host path of the cgroup file `v1_name` (or its v2 equivalent) for process `pid`.

    On a v1 or hybrid host the controller's own hierarchy is used when it is mounted there;
    on a pure v2 host the unified hierarchy, with the v2 file name.
    """
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    v1 = {}
    v2_path = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2_path = path
        for c in controllers.split(","):
            v1[c] = path
    if not is_pure_v2() and controller in v1 and (CGROUP_ROOT / controller).is_dir():
        return CGROUP_ROOT / controller / v1[controller].lstrip("/") / v1_name
    if v2_path is None:
        raise AssertionError(f"process {pid} has no {controller} cgroup: {lines}")
    base = CGROUP_ROOT if is_pure_v2() else CGROUP_ROOT / "unified"
    return base / v2_path.lstrip("/") / V2_NAMES.get(v1_name, v1_name)


def read_limit(pid: int, controller: str, v1_name: str) -> str:
    return cgroup_file(pid, controller, v1_name).read_text().strip()
