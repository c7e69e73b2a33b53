"""kettle.cgroups on the real kernel: limits, freezer, stats, kill, destroy, the BPF filter.

Every test makes its own cgroup with a unique name and removes it (and its processes) even
when it fails.  The host's layout decides what runs: v1/hybrid hosts use the v1 hierarchies;
the cgroup2 tests use the host's cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on
a hybrid host, where nothing of the host's own unified root is changed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kettle import cgroups
from kettle.cgroups import bpfdevices
from kettle.cgroups.v1 import V1Manager
from kettle.cgroups.v2 import V2Manager

ROOT = "/sys/fs/cgroup"
MiB = 1 << 20

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
    pytest.mark.skipif(not os.path.isdir(ROOT), reason="no cgroup filesystem"),
]


def _name() -> str:
    return f"/kettle-cgtest-{uuid.uuid4().hex[:12]}"


class Procs:
    """Children started in the test's cgroup; all are killed and reaped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, mgr: Any, argv: list[str]) -> subprocess.Popen[bytes]:
        # Joining before exec puts every later allocation of the child in the cgroup.
        def join() -> None:
            mgr.apply(os.getpid())

        p = subprocess.Popen(argv, preexec_fn=join, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def run(self, mgr: Any, script: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["/bin/sh", "-c", script],
            preexec_fn=lambda: mgr.apply(os.getpid()),
            capture_output=True,
            check=False,
            timeout=30,
        )

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


@contextlib.contextmanager
def managed(make: Callable[[], Any]) -> Iterator[tuple[Any, Procs]]:
    mgr = make()
    procs = Procs()
    try:
        mgr.create()
        yield mgr, procs
    finally:
        with contextlib.suppress(Exception):
            if mgr.is_frozen():
                mgr.thaw()
        procs.cleanup()
        mgr.destroy()
        left = [d for d in mgr.created if os.path.exists(d)]
        assert not left, f"cgroups left behind: {left}"


def _v1_host() -> bool:
    return cgroups.detect_mode(ROOT) in ("v1", "hybrid")


def _cgroup2_mount() -> str | None:
    mode = cgroups.detect_mode(ROOT)
    if mode == "v2":
        return ROOT
    if mode == "hybrid":
        return f"{ROOT}/unified"
    return None


def _read(path: str) -> str:
    return Path(path).read_text().strip()


HOG = [sys.executable, "-S", "-c", "x = bytearray(12 << 20); import time; time.sleep(120)"]


def test_limits_freeze_stats_kill_destroy() -> None:
    with managed(lambda: cgroups.new_manager(_name(), "t")) as (mgr, procs):
        p = procs.start(mgr, HOG)
        mgr.set(
            {
                "memory": {"limit": 256 * MiB},
                "pids": {"limit": 16},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            }
        )
        if isinstance(mgr, V1Manager):
            assert _read(f"{mgr.paths['memory']}/memory.limit_in_bytes") == str(256 * MiB)
            assert _read(f"{mgr.paths['pids']}/pids.max") == "16"
            assert _read(f"{mgr.paths['cpu']}/cpu.shares") == "512"
            assert _read(f"{mgr.paths['cpu']}/cpu.cfs_quota_us") == "50000"
        else:
            assert isinstance(mgr, V2Manager)
            assert _read(f"{mgr.dir}/memory.max") == str(256 * MiB)
            assert _read(f"{mgr.dir}/pids.max") == "16"
            assert _read(f"{mgr.dir}/cpu.weight") == "20"
            assert _read(f"{mgr.dir}/cpu.max") == "50000 100000"
        assert mgr.pids() == [p.pid]

        # wait until the child has allocated (its usage passes 12 MiB)
        for _ in range(200):
            if mgr.stats()["memory"]["usage"].get("usage", 0) >= 12 * MiB:
                break
            time.sleep(0.05)
        st = mgr.stats()
        assert st["memory"]["usage"]["usage"] >= 12 * MiB
        assert st["memory"]["usage"]["limit"] == 256 * MiB
        assert st["pids"]["current"] == 1
        assert st["pids"]["limit"] == 16
        assert st["cpu"]["usage"]["total"] > 0
        assert mgr.oom_kill_count() == 0

        mgr.freeze()
        assert mgr.is_frozen()
        if isinstance(mgr, V1Manager) and "freezer" in mgr.paths:
            assert _read(f"{mgr.paths['freezer']}/freezer.state") == "FROZEN"
        else:
            d = mgr.path()
            assert "frozen 1" in Path(f"{d}/cgroup.events").read_text()
        mgr.thaw()
        assert not mgr.is_frozen()

        mgr.kill_all(signal.SIGKILL)
        assert p.wait(timeout=10) == -signal.SIGKILL
        assert mgr.pids() == []


def test_kill_all_with_a_catchable_signal() -> None:
    with managed(lambda: cgroups.new_manager(_name(), "t")) as (mgr, procs):
        a = procs.start(mgr, ["sleep", "120"])
        b = procs.start(mgr, ["sleep", "120"])
        mgr.kill_all(signal.SIGTERM)
        assert a.wait(timeout=10) == -signal.SIGTERM
        assert b.wait(timeout=10) == -signal.SIGTERM
        assert not mgr.is_frozen()  # the freeze around the signals was undone


def test_memory_limit_ooms_the_hog() -> None:
    with managed(lambda: cgroups.new_manager(_name(), "t")) as (mgr, procs):
        mgr.set({"memory": {"limit": 8 * MiB, "swap": 8 * MiB}})
        if isinstance(mgr, V2Manager) and not os.path.exists(f"{mgr.dir}/memory.max"):
            pytest.skip("no memory controller here")
        p = procs.start(mgr, HOG)
        assert p.wait(timeout=30) == -signal.SIGKILL
        assert mgr.oom_kill_count() >= 1


@pytest.mark.skipif(cgroups.detect_mode(ROOT) != "hybrid", reason="hybrid host only")
def test_hybrid_joins_the_unified_hierarchy_too() -> None:
    with managed(lambda: cgroups.new_manager(_name(), "t")) as (mgr, procs):
        assert isinstance(mgr, V1Manager) and mgr.unified is not None
        p = procs.start(mgr, ["sleep", "120"])
        lines = Path(f"/proc/{p.pid}/cgroup").read_text().splitlines()
        name = mgr.unified.removeprefix(f"{ROOT}/unified")
        assert f"0::{name}" in lines
        assert any(line.endswith(f":memory:{name}") for line in lines)
        mgr.kill_all(signal.SIGKILL)  # through cgroup.kill in the unified cgroup
        assert p.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.skipif(not _v1_host(), reason="cgroup v1 devices controller only on v1/hybrid hosts")
def test_v1_device_rules() -> None:
    with managed(lambda: cgroups.new_manager(_name(), "t")) as (mgr, procs):
        if "devices" not in mgr.paths:
            pytest.skip("devices controller not mounted")
        rules = [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},  # /dev/zero
        ]
        mgr.set({"devices": rules}, default_devices=False)
        assert _read(f"{mgr.paths['devices']}/devices.list") == "c 1:5 r"
        denied = procs.run(mgr, "echo > /dev/null")
        assert denied.returncode != 0
        assert b"not permitted" in denied.stderr
        assert procs.run(mgr, "head -c 4 /dev/zero > /proc/self/fd/1").returncode == 0
        # an update adds /dev/null without a reset
        mgr.set(
            {"devices": [*rules, {"allow": True, "type": "c", "major": 1, "minor": 3}]},
            default_devices=False,
        )
        assert procs.run(mgr, "echo > /dev/null").returncode == 0


@pytest.mark.skipif(_cgroup2_mount() is None, reason="no cgroup2 mount")
def test_v2_bpf_device_filter_freeze_kill() -> None:
    mount = _cgroup2_mount()
    assert mount is not None

    def make() -> V2Manager:
        if mount == ROOT:
            mgr = cgroups.new_manager(_name(), "t")
            assert isinstance(mgr, V2Manager)
            return mgr
        # On a hybrid host: a cgroup2 directory of our own, without enabling anything in the
        # host's unified root (enable=[]).
        return V2Manager(root=mount, path=mount + _name(), enable=[])

    with managed(make) as (mgr, procs):
        rules = [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},  # /dev/zero
        ]
        mgr.set({"devices": rules}, default_devices=False)
        assert len(bpfdevices.attached(mgr.dir)) == 1
        denied = procs.run(mgr, "echo > /dev/null")
        assert denied.returncode != 0
        assert b"not permitted" in denied.stderr
        assert procs.run(mgr, "cat /dev/null").returncode != 0  # no read rule for /dev/null
        assert procs.run(mgr, "head -c 4 /dev/zero > /proc/self/fd/1").returncode == 0
        assert procs.run(mgr, "head -c 4 /dev/zero > /dev/null").returncode != 0

        # an update replaces the program: still one, now allowing /dev/null
        mgr.set(
            {"devices": [*rules, {"allow": True, "type": "c", "major": 1, "minor": 3}]},
            default_devices=False,
        )
        assert len(bpfdevices.attached(mgr.dir)) == 1
        assert procs.run(mgr, "echo > /dev/null").returncode == 0
        # runc's default list (no spec rules): /dev/null works, a disk does not
        mgr.set({})
        assert procs.run(mgr, "echo > /dev/null").returncode == 0
        disk = next(
            (f"/dev/{n}" for n in ("vda", "sda", "nvme0n1") if os.path.exists(f"/dev/{n}")), None
        )
        if disk is not None:
            assert procs.run(mgr, f"head -c 1 {disk} > /proc/self/fd/1").returncode != 0

        p = procs.start(mgr, ["sleep", "120"])
        mgr.freeze()
        assert mgr.is_frozen()
        assert "frozen 1" in Path(f"{mgr.dir}/cgroup.events").read_text()
        state = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state in ("S", "D")  # a frozen task sleeps in the freezer
        mgr.thaw()
        assert "frozen 0" in Path(f"{mgr.dir}/cgroup.events").read_text()
        assert mgr.pids() == [p.pid]
        mgr.kill_all(signal.SIGKILL)
        assert p.wait(timeout=10) == -signal.SIGKILL
