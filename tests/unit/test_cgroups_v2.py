"""V2Manager on a fake cgroup2 tree."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import test_cgroups_fakefs as fakefs  # the fake cgroupfs, a sibling module

from kettle import cgroups
from kettle.cgroups import bpfdevices
from kettle.cgroups import devices as dv
from kettle.cgroups.v2 import V2Manager
from kettle.errors import FailedPrecondition, InvalidArgument, NotFound

MiB = 1 << 20


class Filters:
    """Records device filters instead of loading BPF programs."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.installed: list[tuple[str, list[dv.Rule]]] = []
        mp.setattr(bpfdevices, "install", self.install)

    def install(self, cgroup_dir: str, rules: list[dv.Rule]) -> None:
        self.installed.append((cgroup_dir, list(rules)))


def make(
    tmp_path: Path, mp: pytest.MonkeyPatch, path: str | None = "/kettle/ctr", **kw: Any
) -> tuple[fakefs.FakeCgroupfs, V2Manager, Filters]:
    fake = fakefs.FakeCgroupfs(tmp_path, mp, "v2", **kw)
    filters = Filters(mp)
    mgr = cgroups.new_manager(path, "ctr-id", host=fake.host, rootless=kw.pop("rootless", False))
    assert isinstance(mgr, V2Manager)
    return fake, mgr, filters


def test_relative_path_is_below_the_parent_of_our_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch, path=None)
    # we run in /user.slice/session-1.scope, which has processes: siblings, not children
    assert mgr.dir == str(fake.root / "user.slice/ctr-id")
    m2 = cgroups.new_manager("pods/p1", "id", host=fake.host)
    assert isinstance(m2, V2Manager)
    assert m2.dir == str(fake.root / "user.slice/pods/p1")
    m3 = cgroups.new_manager("/pods/p1", "id", host=fake.host)
    assert isinstance(m3, V2Manager)
    assert m3.dir == str(fake.root / "pods/p1")


def test_create_enables_controllers_in_every_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    assert fake.read("cgroup.subtree_control").split() == [
        "cpuset",
        "cpu",
        "io",
        "memory",
        "hugetlb",
        "pids",
    ]
    assert fake.read("kettle/cgroup.subtree_control").split() == [
        "cpuset",
        "cpu",
        "io",
        "memory",
        "hugetlb",
        "pids",
    ]
    assert fake.read("kettle/ctr/cgroup.subtree_control") == ""  # the leaf gets processes
    assert (fake.root / "kettle/ctr/memory.max").exists()
    mgr.create()  # idempotent: nothing new to enable
    assert len([p for p, _ in fake.writes if p.endswith("subtree_control")]) == 2


def test_create_with_enable_list_touches_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fakefs.FakeCgroupfs(tmp_path, monkeypatch, "v2")
    Filters(monkeypatch)
    mgr = V2Manager(root=str(fake.root), path=str(fake.root / "t/c"), enable=[])
    mgr.create()
    assert not [p for p, _ in fake.writes if p.endswith("subtree_control")]
    # a limit still gets the controller it needs, enabled on demand
    mgr.set({"pids": {"limit": 9}}, default_devices=False)
    assert fake.read("cgroup.subtree_control") == "pids"
    assert fake.read("t/c/pids.max") == "9"
    assert fake.read("t/cgroup.subtree_control") == "pids"


def test_set_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set({"memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 96 * MiB}})
    assert fake.read("kettle/ctr/memory.max") == str(64 * MiB)
    assert fake.read("kettle/ctr/memory.low") == str(32 * MiB)
    assert fake.read("kettle/ctr/memory.swap.max") == str(32 * MiB)  # swap alone on v2
    mgr.set({"memory": {"limit": -1}})
    assert fake.read("kettle/ctr/memory.max") == "max"
    assert fake.read("kettle/ctr/memory.swap.max") == "max"


@pytest.mark.parametrize(
    ("memory", "msg"),
    [
        ({"kernel": MiB}, r"memory\.kernel: cgroup v2 has no kernel memory limit"),
        ({"kernelTCP": MiB}, r"memory\.kernelTCP"),
        ({"swappiness": 0}, r"memory\.swappiness"),
        ({"disableOOMKiller": True}, r"memory\.disableOOMKiller"),
        ({"useHierarchy": False}, r"memory\.useHierarchy"),
        ({"limit": MiB, "swap": MiB // 2}, r"memory\.swap: memory\+swap limit"),
    ],
)
def test_v1_only_memory_fields_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory: dict[str, Any], msg: str
) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    before = len(fake.writes)
    with pytest.raises(InvalidArgument, match=msg):
        mgr.set({"memory": memory})
    assert len(fake.writes) == before


def test_set_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set(
        {
            "cpu": {
                "shares": 1024,
                "quota": 50000,
                "period": 100000,
                "burst": 500,
                "idle": 0,
                "cpus": "0-1",
                "mems": "0",
            }
        }
    )
    assert fake.read("kettle/ctr/cpu.weight") == "39"
    assert fake.read("kettle/ctr/cpu.max") == "50000 100000"
    assert fake.read("kettle/ctr/cpu.max.burst") == "500"
    assert fake.read("kettle/ctr/cpuset.cpus") == "0-1"
    mgr.set({"cpu": {"quota": -1}})
    assert fake.read("kettle/ctr/cpu.max") == "max"
    with pytest.raises(InvalidArgument, match=r"cpu\.realtimeRuntime: cgroup v2 has no real-time"):
        mgr.set({"cpu": {"realtimeRuntime": 1000}})


def test_set_pids_and_hugetlb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set({"pids": {"limit": 0}, "hugepageLimits": [{"pageSize": "2MB", "limit": 8 * MiB}]})
    assert fake.read("kettle/ctr/pids.max") == "max"
    assert fake.read("kettle/ctr/hugetlb.2MB.max") == str(8 * MiB)
    with pytest.raises(
        FailedPrecondition, match=r"hugepageLimits\[0\]\.limit: .*hugetlb\.16KB\.max does not exist"
    ):
        mgr.set({"hugepageLimits": [{"pageSize": "16KB", "limit": 1}]})


def test_set_io_without_bfq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set(
        {
            "blockIO": {
                "weight": 500,
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
            }
        }
    )
    assert fake.read("kettle/ctr/io.weight") == "4950"
    assert [v for p, v in fake.writes if p.endswith("io.max")] == ["8:0 rbps=1000", "8:0 wiops=10"]
    with pytest.raises(
        FailedPrecondition, match=r"weightDevice\[0\]\.weight: per-device weights need the BFQ"
    ):
        mgr.set({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 10}]}})
    with pytest.raises(
        InvalidArgument, match=r"blockIO\.leafWeight: cgroup v2 has no leaf weights"
    ):
        mgr.set({"blockIO": {"leafWeight": 10}})


def test_set_io_with_bfq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    (fake.root / "kettle/ctr/io.bfq.weight").write_text("default 100")
    mgr.set({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 10}]}})
    assert [v for p, v in fake.writes if p.endswith("io.bfq.weight")] == ["500", "8:0 10"]


def test_network_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(InvalidArgument, match=r"network\.classID: net_cls/net_prio do not exist"):
        mgr.set({"network": {"classID": 1}})


def test_missing_controller_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake, mgr, _ = make(tmp_path, monkeypatch, v2_controllers=("cpu", "memory"))
    mgr.create()
    with pytest.raises(
        FailedPrecondition, match=r"pids\.limit: cgroup v2 controller pids is not available"
    ):
        mgr.set({"pids": {"limit": 5}})


def test_unified_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set({"unified": {"memory.max": "123456", "pids.max": "7"}})
    assert fake.read("kettle/ctr/memory.max") == "123456"
    assert fake.read("kettle/ctr/pids.max") == "7"
    with pytest.raises(
        FailedPrecondition, match=r"unified\['rdma\.max'\]: .*controller rdma is not enabled"
    ):
        mgr.set({"unified": {"rdma.max": "mlx 1"}})
    with pytest.raises(InvalidArgument, match="not a cgroup file name"):
        mgr.set({"unified": {"../escape": "1"}})


def test_devices_become_a_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake, mgr, filters = make(tmp_path, monkeypatch)
    mgr.create()
    spec = [{"allow": False, "access": "rwm"}]
    mgr.set({"devices": spec}, linux_devices=[{"type": "c", "major": 10, "minor": 229}])
    assert len(filters.installed) == 1
    where, rules = filters.installed[0]
    assert where == mgr.dir
    assert rules == dv.container_rules(spec, [{"type": "c", "major": 10, "minor": 229}])
    mgr.set({"devices": spec}, default_devices=False)
    assert filters.installed[1][1] == [dv.Rule(False)]


def test_rootless_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fakefs.FakeCgroupfs(tmp_path, monkeypatch, "v2")
    filters = Filters(monkeypatch)
    writable = {str(fake.root / "user.slice")}
    monkeypatch.setattr(cgroups.fsutil, "writable", lambda p: p in writable)
    (fake.root / "user.slice").mkdir()
    (fake.root / "user.slice/cgroup.controllers").write_text("pids memory")
    (fake.root / "user.slice/cgroup.subtree_control").write_text("pids")
    mgr = cgroups.new_manager(None, "r1", rootless=True, host=fake.host)
    assert isinstance(mgr, V2Manager) and mgr.rootless
    with pytest.raises(NotFound, match=r"user\.slice/r1 does not exist"):
        mgr.set({})
    mgr.create()
    mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
    assert filters.installed == []  # no BPF for an unprivileged user
    denied = cgroups.new_manager("/elsewhere/r1", "r1", rootless=True, host=fake.host)
    assert denied.to_state()["mode"] == "none"
    assert not denied.exists()


def test_freeze_thaw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.freeze()
    assert fake.read("kettle/ctr/cgroup.events").split()[-1] == "1"
    assert mgr.is_frozen()
    mgr.thaw()
    assert not mgr.is_frozen()


def test_freeze_that_never_completes_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    monkeypatch.setattr("kettle.cgroups.freezer.FREEZE_TIMEOUT", 0.01)
    real = fake.write

    def stuck(path: str, value: str) -> None:
        real(path, value)
        if path.endswith("cgroup.freeze"):
            (Path(path).parent / "cgroup.events").write_text("populated 1\nfrozen 0\n")

    monkeypatch.setattr(cgroups.fsutil, "write", stuck)
    from kettle.errors import Unavailable

    with pytest.raises(Unavailable, match="not frozen"):
        mgr.freeze()
    assert fake.read("kettle/ctr/cgroup.freeze") == "0"


def test_kill_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.apply(300)
    mgr.kill_all(signal.SIGKILL)
    assert [v for p, v in fake.writes if p.endswith("cgroup.kill")] == ["1"]
    mgr.kill_all(signal.SIGHUP)
    assert fake.kills == [(300, signal.SIGHUP)]
    assert [v for p, v in fake.writes if p.endswith("cgroup.freeze")] == ["1", "0"]


def test_kill_all_without_cgroup_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch, drop_files=("cgroup.kill",))
    mgr.create()
    mgr.apply(301)
    mgr.kill_all(signal.SIGKILL)
    assert fake.kills == [(301, signal.SIGKILL)]


def test_stats_and_oom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    (fake.root / "kettle/ctr/memory.max").write_text(str(64 * MiB))
    (fake.root / "kettle/ctr/pids.max").write_text("max")
    st = mgr.stats()
    json.dumps(st)
    assert st["cpu"]["usage"] == {"total": 1_500_000, "kernel": 500_000, "user": 1_000_000}
    assert st["cpu"]["throttling"] == {"periods": 7, "throttledPeriods": 2, "throttledTime": 30_000}
    assert st["memory"]["usage"] == {"limit": 64 * MiB, "usage": 4096, "max": 8192, "failcnt": 0}
    assert st["memory"]["swap"]["limit"] == 2**64 - 1
    assert st["memory"]["cache"] == 2048
    assert st["pids"] == {"current": 2}
    assert st["blkio"]["ioServicedRecursive"] == [
        {"major": 8, "op": "Read", "value": 1},
        {"major": 8, "op": "Write", "value": 2},
    ]
    assert set(st["hugetlb"]) == {"1GB", "2MB"}
    assert mgr.oom_kill_count() == 3


def test_destroy_and_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr, _ = make(tmp_path, monkeypatch)
    mgr.create()
    (fake.root / "kettle/ctr/nested").mkdir()  # the container made a child cgroup
    (fake.root / "kettle/ctr/nested/cgroup.procs").write_text("")
    again = cgroups.from_state(json.loads(json.dumps(mgr.to_state())))
    assert isinstance(again, V2Manager) and again.dir == mgr.dir
    again.destroy()
    assert not (fake.root / "kettle").exists()
    assert not again.exists()


def test_from_state_rejects_garbage() -> None:
    with pytest.raises(InvalidArgument, match="unknown mode"):
        cgroups.from_state({"mode": "v3"})


def test_disabled_stats_are_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = cgroups.from_state({"mode": "none", "reason": "test"})
    with pytest.raises(NotFound, match="test"):
        mgr.stats()
