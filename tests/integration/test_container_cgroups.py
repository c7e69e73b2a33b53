"""cgroup resources as the host and the container see them; cgroupsPath; removal on delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import cgroups, leaks
from tests.support.containers import Containers
from tests.support.runtime import Runtime
from tests.support.waiting import wait_for

pytestmark = pytest.mark.privileged

MiB = 1024 * 1024


def test_limits_in_host_cgroup_files(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    bundle.linux["resources"].update(
        {
            "memory": {"limit": 64 * MiB, "reservation": 32 * MiB},
            "pids": {"limit": 32},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        }
    )
    pid = containers.start(bundle)["pid"]
    memory = cgroups.read_limit(pid, "memory", "memory.limit_in_bytes")
    assert int(memory) == 64 * MiB
    assert int(cgroups.read_limit(pid, "memory", "memory.soft_limit_in_bytes")) == 32 * MiB
    assert cgroups.read_limit(pid, "pids", "pids.max") == "32"
    quota = cgroups.cgroup_file(pid, "cpu", "cpu.cfs_quota_us")
    if quota.name == "cpu.cfs_quota_us":
        assert quota.read_text().strip() == "50000"
        assert quota.with_name("cpu.cfs_period_us").read_text().strip() == "100000"
        assert quota.with_name("cpu.shares").read_text().strip() == "512"
    else:
        assert quota.read_text().split() == ["50000", "100000"]


def test_limits_visible_inside_container(containers: Containers) -> None:
    script = (
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
        " || cat /sys/fs/cgroup/memory.max;"
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"
    )
    bundle = containers.bundle("/bin/sh", "-c", script)
    bundle.linux["resources"].update({"memory": {"limit": 48 * MiB}, "pids": {"limit": 21}})
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout.split() == [str(48 * MiB), "21"]


def test_pids_limit_enforced(containers: Containers) -> None:
    script = (
        "n=0; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & n=$((n+1)); done 2>/dev/null; echo ok"
    )
    bundle = containers.bundle("/bin/sh", "-c", script)
    bundle.linux["resources"]["pids"] = {"limit": 4}
    result = containers.run(bundle, timeout=60)
    # The shell cannot fork past the limit: busybox reports "can't fork" and gives up.
    assert "fork" in (result.stdout + result.stderr).lower() or result.returncode != 0


def test_explicit_cgroups_path(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    path = f"/kettle-test-{bundle.id}"
    bundle.linux["cgroupsPath"] = path
    bundle.linux["resources"]["pids"] = {"limit": 10}
    pid = containers.start(bundle)["pid"]
    pids_file = cgroups.cgroup_file(pid, "pids", "pids.max")
    assert path in str(pids_file)
    assert pids_file.read_text().strip() == "10"
    runtime.delete(bundle.id, force=True)
    wait_for(lambda: not pids_file.parent.exists())
    assert leaks.cgroups_naming(bundle.id) == []


def test_cgroup_removed_after_container_exits_and_delete(
    runtime: Runtime, containers: Containers
) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    pid = containers.start(bundle)["pid"]
    directory = cgroups.cgroup_file(pid, "pids", "pids.max").parent
    assert directory.is_dir()
    runtime.kill(bundle.id, "KILL")
    runtime.wait_status(bundle.id, "stopped")
    runtime.delete(bundle.id)
    assert not directory.exists()


def test_container_in_its_own_cgroup(containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    pid = containers.start(bundle)["pid"]
    mine = Path("/proc/self/cgroup").read_text().splitlines()
    theirs = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert mine != theirs
