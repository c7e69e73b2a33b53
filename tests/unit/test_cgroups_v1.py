"""V1Manager on a fake cgroupfs: v1 and hybrid layouts."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import test_cgroups_fakefs as fakefs  # the fake cgroupfs, a sibling module

from kettle import cgroups
from kettle.cgroups import devices as dv
from kettle.cgroups.v1 import V1Manager
from kettle.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SyscallError,
    Unimplemented,
)

MiB = 1 << 20


def make(
    tmp_path: Path, mp: pytest.MonkeyPatch, mode: str = "v1", path: str | None = "/ctr", **kw: Any
) -> tuple[fakefs.FakeCgroupfs, V1Manager]:
    fake = fakefs.FakeCgroupfs(tmp_path, mp, mode, **kw)
    mgr = cgroups.new_manager(path, "ctr-id", host=fake.host)
    assert isinstance(mgr, V1Manager)
    return fake, mgr


def writes_to(fake: fakefs.FakeCgroupfs, suffix: str) -> list[str]:
    return [v for p, v in fake.writes if p.endswith(suffix)]


# --- paths -----------------------------------------------------------------------------------


def test_absolute_path_is_below_each_hierarchy_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch, path="/kettle/abc")
    assert mgr.mode == "v1"
    assert mgr.paths["memory"] == str(fake.root / "memory/kettle/abc")
    assert mgr.paths["name=systemd"] == str(fake.root / "systemd/kettle/abc")
    assert mgr.unified is None


def test_default_path_is_the_id_below_our_own_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch, "hybrid", path=None, own="/process_api/x1")
    assert mgr.mode == "hybrid"
    assert mgr.paths["memory"] == str(fake.root / "memory/process_api/x1/ctr-id")
    assert mgr.unified == str(fake.root / "unified/ctr-id")  # our unified cgroup is "/"


def test_create_makes_every_hierarchy_and_inherits_cpuset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch, "hybrid", path="/a/b")
    mgr.create()
    for c in (
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "systemd",
        "unified",
    ):
        assert (fake.root / c / "a/b").is_dir(), c
    assert fake.read("cpuset/a/cpuset.cpus") == "0-3"
    assert fake.read("cpuset/a/b/cpuset.cpus") == "0-3"
    assert fake.read("cpuset/a/b/cpuset.mems") == "0"
    mgr.create()  # idempotent
    assert mgr.created.count(str(fake.root / "memory/a/b")) == 1


def test_create_refuses_a_busy_cgroup_it_did_not_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    for c in ("memory", "pids"):
        (fake.root / c / "ctr").mkdir()
        (fake.root / c / "ctr" / "cgroup.procs").write_text("4242\n")
    with pytest.raises(FailedPrecondition, match="not empty: 1 process"):
        mgr.create()


def test_apply_joins_every_hierarchy_and_unified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch, "hybrid")
    mgr.create()
    mgr.apply(1234)
    procs = [p for p, v in fake.writes if p.endswith("cgroup.procs") and v == "1234"]
    assert len(procs) == 10  # 9 v1 hierarchies + unified
    assert mgr.pids() == [1234]


# --- set -------------------------------------------------------------------------------------


def test_set_memory_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set(
        {
            "memory": {
                "limit": 64 * MiB,
                "reservation": 32 * MiB,
                "swap": 128 * MiB,
                "swappiness": 10,
                "disableOOMKiller": True,
            }
        }
    )
    assert fake.read("memory/ctr/memory.limit_in_bytes") == str(64 * MiB)
    assert fake.read("memory/ctr/memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert fake.read("memory/ctr/memory.soft_limit_in_bytes") == str(32 * MiB)
    assert fake.read("memory/ctr/memory.swappiness") == "10"
    assert fake.read("memory/ctr/memory.oom_control") == "1"
    # from unlimited, the limit goes first (memsw stays above it all along)
    order = [p.rsplit("/", 1)[1] for p, _ in fake.writes if "limit_in_bytes" in p]
    assert order == [
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
    ]


def test_set_memory_raising_writes_swap_before_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    (fake.root / "memory/ctr/memory.limit_in_bytes").write_text(str(32 * MiB))
    (fake.root / "memory/ctr/memory.memsw.limit_in_bytes").write_text(str(64 * MiB))
    mgr.set({"memory": {"limit": 256 * MiB, "swap": 512 * MiB}})
    order = [p.rsplit("/", 1)[1] for p, _ in fake.writes if "limit_in_bytes" in p]
    assert order == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_set_memory_lowering_writes_limit_before_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    (fake.root / "memory/ctr/memory.limit_in_bytes").write_text(str(512 * MiB))
    mgr.set({"memory": {"limit": 64 * MiB, "swap": 128 * MiB}})
    order = [p.rsplit("/", 1)[1] for p, _ in fake.writes if "limit_in_bytes" in p]
    assert order == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_set_unlimited_memory_lifts_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set({"memory": {"limit": -1}})
    assert fake.read("memory/ctr/memory.limit_in_bytes") == "-1"
    assert fake.read("memory/ctr/memory.memsw.limit_in_bytes") == "-1"


def test_set_memory_without_kernel_support_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake, mgr = make(tmp_path, monkeypatch, drop_files=("memory.memsw.limit_in_bytes",))
    mgr.create()
    with pytest.raises(
        FailedPrecondition, match=r"memory\.kernel: .*memory\.kmem\.limit_in_bytes does not exist"
    ):
        mgr.set({"memory": {"kernel": 16 * MiB}})
    with pytest.raises(FailedPrecondition, match=r"memory\.swap: .*does not account swap"):
        mgr.set({"memory": {"limit": 16 * MiB, "swap": 32 * MiB}})


def test_set_memory_check_before_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(FailedPrecondition, match="below the current usage 4096"):
        mgr.set({"memory": {"limit": 1024, "checkBeforeUpdate": True}})


def test_set_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set(
        {
            "cpu": {
                "shares": 512,
                "quota": 50000,
                "period": 200000,
                "burst": 1000,
                "cpus": "1",
                "mems": "0",
            }
        }
    )
    assert fake.read("cpu/ctr/cpu.shares") == "512"
    assert fake.read("cpu/ctr/cpu.cfs_quota_us") == "50000"
    assert fake.read("cpu/ctr/cpu.cfs_period_us") == "200000"
    assert fake.read("cpu/ctr/cpu.cfs_burst_us") == "1000"
    assert fake.read("cpuset/ctr/cpuset.cpus") == "1"


def test_set_cpu_shares_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(InvalidArgument, match="maximum allowed cpu-shares is 262144"):
        mgr.set({"cpu": {"shares": 500000}})


def test_set_realtime_without_rt_group_sched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(
        FailedPrecondition, match=r"cpu\.realtimePeriod: .*cpu\.rt_period_us does not exist"
    ):
        mgr.set({"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 950000}})


def test_set_pids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set({"pids": {"limit": 20}})
    assert fake.read("pids/ctr/pids.max") == "20"
    mgr.set({"pids": {"limit": -1}})
    assert fake.read("pids/ctr/pids.max") == "max"


def test_set_blkio_on_bfq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set(
        {
            "blockIO": {
                "weight": 300,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 500}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
            }
        }
    )
    assert fake.read("blkio/ctr/blkio.bfq.weight") == "300"
    assert fake.read("blkio/ctr/blkio.bfq.weight_device") == "8:0 500"
    assert fake.read("blkio/ctr/blkio.throttle.read_bps_device") == "8:0 1048576"
    assert fake.read("blkio/ctr/blkio.throttle.write_iops_device") == "8:16 100"
    with pytest.raises(FailedPrecondition, match=r"leafWeight: .*removed with CFQ"):
        mgr.set({"blockIO": {"leafWeight": 300}})


def test_unmounted_controllers_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(FailedPrecondition, match="cgroup v1 controller hugetlb is not mounted"):
        mgr.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]})
    with pytest.raises(
        FailedPrecondition, match=r"network\.classID: cgroup v1 controller net_cls is not mounted"
    ):
        mgr.set({"network": {"classID": 0x100001}})
    with pytest.raises(FailedPrecondition, match="controller net_prio is not mounted"):
        mgr.set({"network": {"priorities": [{"name": "eth0", "priority": 5}]}})
    # nothing was written by the refused calls
    assert not [p for p, _ in fake.writes if "hugetlb" in p or "net_" in p]


def test_set_refuses_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    before = len(fake.writes)
    with pytest.raises(FailedPrecondition):
        mgr.set({"pids": {"limit": 5}, "network": {"classID": 1}})
    assert len(fake.writes) == before


def test_unified_is_refused_on_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.unified: cgroup v2 keys"):
        mgr.set({"unified": {"memory.high": "1000"}})


def test_hybrid_writes_unified_keys_and_hugetlb_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch, "hybrid")
    mgr.create()
    mgr.set(
        {
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}],
            "unified": {"hugetlb.1GB.max": "0"},
        }
    )
    # hugetlb lives on the unified mount here; it had to be enabled down to our cgroup
    assert fake.read("unified/cgroup.subtree_control") == "hugetlb"
    assert fake.read("unified/ctr/hugetlb.2MB.max") == str(4 * MiB)
    assert fake.read("unified/ctr/hugetlb.1GB.max") == "0"
    with pytest.raises(
        FailedPrecondition, match=r"unified\['memory\.high'\]: .*controller memory is not enabled"
    ):
        mgr.set({"unified": {"memory.high": "1000"}})


def test_unknown_fields_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.memory\.limitt: unknown field"):
        mgr.set({"memory": {"limitt": 5}})
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.bogus: unknown field"):
        mgr.set({"bogus": {}})
    with pytest.raises(InvalidArgument, match=r"pids\.limit: '5' is not an integer"):
        mgr.set({"pids": {"limit": "5"}})


def test_write_errors_carry_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    real_write = fake.write

    def refuse(path: str, value: str) -> None:
        if path.endswith("pids.max"):
            raise SyscallError("write", 22, path)
        real_write(path, value)

    monkeypatch.setattr(cgroups.fsutil, "write", refuse)
    with pytest.raises(SyscallError) as ei:
        mgr.set({"pids": {"limit": 3}})
    assert ei.value.path == str(fake.root / "pids/ctr/pids.max")
    assert "linux.resources.pids.limit = '3'" in str(ei.value)


# --- devices ---------------------------------------------------------------------------------


def test_devices_reach_the_kernel_state_of_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    spec = {
        "devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
        ]
    }
    mgr.set(spec, linux_devices=[{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}])
    rules = dv.container_rules(spec["devices"], [{"type": "b", "major": 8, "minor": 0}])
    kernel = fake.device_state(fake.root / "devices/ctr")
    for t, mj, mn in [
        ("c", 1, 3),
        ("c", 10, 229),
        ("b", 8, 0),
        ("b", 8, 1),
        ("c", 4, 1),
        ("c", 136, 7),
    ]:
        for op in "rwm":
            assert kernel.allows(t, mj, mn, op) == dv.allowed(rules, t, mj, mn, op), (t, mj, mn, op)
    assert writes_to(fake, "devices.deny")[0] == "a"


def test_devices_update_does_not_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
    fake.writes.clear()
    mgr.set(
        {
            "devices": [
                {"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 10, "minor": 229},
            ]
        }
    )
    assert fake.writes == [("devices/ctr/devices.allow", "c 10:229 rwm")]


def test_devices_hole_punching_is_refused_on_v1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    with pytest.raises(InvalidArgument, match=r"devices\[1\]: cgroup v1 cannot deny c 1:3 w"):
        mgr.set(
            {
                "devices": [
                    {"allow": True, "type": "c", "access": "rwm"},
                    {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
                ]
            },
            default_devices=False,
        )
    # with allow-all as the default the same deny is an ordinary exception
    mgr.set(
        {
            "devices": [
                {"allow": True, "access": "rwm"},
                {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
            ]
        },
        default_devices=False,
    )
    kernel = fake.device_state(fake.root / "devices/ctr")
    assert kernel.default_allow and kernel.exceptions == {("c", 1, 3): "w"}


# --- freezer, pids, kill ---------------------------------------------------------------------


def test_freeze_and_thaw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    assert not mgr.is_frozen()
    mgr.freeze()
    assert fake.read("freezer/ctr/freezer.state") == "FROZEN"
    assert mgr.is_frozen()
    mgr.thaw()
    assert not mgr.is_frozen()


def test_frozen_by_an_ancestor_is_not_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    (fake.root / "freezer/ctr/freezer.state").write_text("FROZEN")
    assert not mgr.is_frozen()  # self_freezing is 0


def test_kill_all_freezes_signals_thaws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.apply(101)
    (fake.root / "pids/ctr/sub").mkdir()
    (fake.root / "pids/ctr/sub/cgroup.procs").write_text("102\n")
    mgr.kill_all(signal.SIGTERM)
    assert sorted(fake.kills) == [(101, signal.SIGTERM), (102, signal.SIGTERM)]
    assert writes_to(fake, "freezer.state") == ["FROZEN", "THAWED"]


def test_kill_all_uses_cgroup_kill_on_hybrid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, mgr = make(tmp_path, monkeypatch, "hybrid")
    mgr.create()
    mgr.apply(101)
    mgr.kill_all(signal.SIGKILL)
    assert writes_to(fake, "unified/ctr/cgroup.kill") == ["1"]
    assert fake.kills == []


# --- stats, oom ------------------------------------------------------------------------------


def test_stats_has_runc_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    (fake.root / "pids/ctr/pids.max").write_text("50")
    st = mgr.stats()
    json.dumps(st)
    assert st["cpu"]["usage"]["total"] == 123456
    assert st["cpu"]["usage"]["percpu"] == [100000, 23456]
    assert st["cpu"]["usage"]["percpu_user"] == [60000, 20000]
    ticks = os.sysconf("SC_CLK_TCK")
    assert st["cpu"]["usage"]["user"] == 2 * 1_000_000_000 // ticks
    assert st["cpu"]["throttling"] == {"periods": 5, "throttledPeriods": 1, "throttledTime": 999}
    assert st["memory"]["usage"] == {
        "limit": 9223372036854771712,
        "usage": 4096,
        "max": 8192,
        "failcnt": 0,
    }
    assert st["memory"]["cache"] == 300
    assert st["memory"]["raw"]["total_rss"] == 400
    assert st["pids"] == {"current": 1, "limit": 50}
    assert st["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "op": "Read", "value": 10},
        {"major": 8, "op": "Write", "value": 20},
    ]
    assert st["hugetlb"] == {}


def test_oom_kill_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    assert mgr.oom_kill_count() == 2


# --- destroy, state --------------------------------------------------------------------------


def test_destroy_removes_only_what_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch, "hybrid", path="/shared/ctr")
    (fake.root / "memory/shared").mkdir()  # somebody else's parent in one hierarchy
    mgr.create()
    (fake.root / "cpu/shared/other").mkdir()  # another container's sibling
    (fake.root / "pids/ctr-inner").mkdir()  # unrelated
    mgr.destroy()
    assert not mgr.exists()
    assert (fake.root / "memory/shared").is_dir()  # existed before: not ours
    assert (fake.root / "cpu/shared/other").is_dir()  # still in use by another
    assert not (fake.root / "pids/shared").exists()  # ours and empty
    assert not (fake.root / "unified/shared").exists()
    assert (fake.root / "pids/ctr-inner").is_dir()
    mgr.destroy()  # again: nothing left, no error


def test_destroy_of_busy_cgroup_fails_with_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kettle.cgroups.common._RMDIR_DELAYS", (0.0,))
    _fake, mgr = make(tmp_path, monkeypatch)
    mgr.create()
    mgr.apply(77)
    with pytest.raises(SyscallError, match=r"rmdir .*ctr"):
        mgr.destroy()


def test_state_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, mgr = make(tmp_path, monkeypatch, "hybrid")
    mgr.create()
    state = json.loads(json.dumps(mgr.to_state()))
    again = cgroups.from_state(state)
    assert isinstance(again, V1Manager)
    assert again.paths == mgr.paths and again.unified == mgr.unified
    assert again.created == mgr.created and again.mode == "hybrid"
    again.destroy()
    assert not (fake.root / "memory/ctr").exists()


# --- drivers and rootless --------------------------------------------------------------------


def test_rootless_on_v1_has_no_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fakefs.FakeCgroupfs(tmp_path, monkeypatch, "v1")
    mgr = cgroups.new_manager(None, "r1", rootless=True, host=fake.host)
    assert not mgr.exists()
    mgr.create()
    mgr.apply(5)
    mgr.set({"devices": [{"allow": False, "access": "rwm"}], "memory": {}})
    with pytest.raises(
        PermissionDenied, match=r"memory\.limit: cannot set resource limits: rootless"
    ):
        mgr.set({"memory": {"limit": MiB}})
    with pytest.raises(FailedPrecondition, match="cannot pause"):
        mgr.freeze()
    with pytest.raises(NotFound):
        mgr.stats()
    assert cgroups.from_state(json.loads(json.dumps(mgr.to_state()))).exists() is False
    assert fake.writes == []


def test_systemd_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fakefs.FakeCgroupfs(tmp_path, monkeypatch, "v1")
    with pytest.raises(
        FailedPrecondition, match="systemd cgroup driver requested but systemd is not running"
    ):
        cgroups.new_manager("system.slice:kettle:x", "x", systemd=True, host=fake.host)
    Path(fake.host.systemd_dir).mkdir()
    with pytest.raises(Unimplemented, match="cgroupfs driver"):
        cgroups.new_manager("system.slice:kettle:x", "x", systemd=True, host=fake.host)
    with pytest.raises(InvalidArgument, match="slice:prefix:name"):
        cgroups.new_manager("/not/systemd", "x", systemd=True, host=fake.host)
