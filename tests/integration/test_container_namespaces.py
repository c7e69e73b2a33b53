"""Namespaces, new or joined by path; user namespaces with mappings; uts; sysctl."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containers import Containers
from tests.support.probe import run_probe
from tests.support.runtime import Runtime

pytestmark = pytest.mark.privileged

SPEC_TO_PROC = {
    "pid": "pid",
    "network": "net",
    "ipc": "ipc",
    "uts": "uts",
    "mount": "mnt",
    "cgroup": "cgroup",
    "user": "user",
}


def host_ns(name: str) -> int:
    return os.stat(f"/proc/self/ns/{name}").st_ino


@pytest.fixture
def netns() -> Iterator[Path]:
    """A named network namespace (ip netns add), deleted afterwards."""
    name = f"kettle-t-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def test_new_namespaces_differ_from_host(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.set_namespace("cgroup")
    report = run_probe(containers, bundle)
    for spec_name in ("pid", "network", "ipc", "uts", "mount", "cgroup"):
        proc_name = SPEC_TO_PROC[spec_name]
        assert report["ns"][proc_name] != host_ns(proc_name), spec_name
    # Not asked for: shared with the host.
    assert report["ns"]["user"] == host_ns("user")
    assert report["pid"] == 1


def test_namespace_not_listed_is_shared(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.drop_namespace("network").drop_namespace("uts")
    bundle.config.pop("hostname", None)
    report = run_probe(containers, bundle)
    assert report["ns"]["net"] == host_ns("net")
    assert report["ns"]["uts"] == host_ns("uts")
    assert report["ns"]["ipc"] != host_ns("ipc")


def test_join_network_namespace_by_path(containers: Containers, netns: Path) -> None:
    bundle = containers.bundle()
    bundle.set_namespace("network", str(netns))
    report = run_probe(containers, bundle)
    assert report["ns"]["net"] == netns.stat().st_ino


def test_join_other_containers_namespaces(runtime: Runtime, containers: Containers) -> None:
    first = containers.bundle("/bin/sleep", "600")
    pid = containers.start(first)["pid"]
    second = containers.bundle()
    second.set_namespace("ipc", f"/proc/{pid}/ns/ipc")
    second.set_namespace("uts", f"/proc/{pid}/ns/uts")
    second.config.pop("hostname", None)
    report = run_probe(containers, second)
    assert report["ns"]["ipc"] == os.stat(f"/proc/{pid}/ns/ipc").st_ino
    assert report["ns"]["uts"] == os.stat(f"/proc/{pid}/ns/uts").st_ino
    assert report["ns"]["net"] != os.stat(f"/proc/{pid}/ns/net").st_ino


def test_hostname(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.config["hostname"] = "kettle-probe"
    report = run_probe(containers, bundle)
    assert report["hostname"] == "kettle-probe"
    assert os.uname().nodename != "kettle-probe"


@pytest.mark.kettle_only  # runc 1.1.5 predates the domainname field (runtime-spec 1.1)
def test_domainname(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.config["domainname"] = "kettle.test"
    report = run_probe(containers, bundle)
    assert report["domainname"] == "kettle.test"


def test_hostname_without_uts_namespace_fails(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    bundle.drop_namespace("uts")
    bundle.config["hostname"] = "must-not-change-host"
    bundle.write()
    containers.track(bundle.id)
    result = runtime.create(bundle, check=False)
    assert result.returncode != 0
    assert os.uname().nodename != "must-not-change-host"


def test_sysctl_in_new_netns(containers: Containers) -> None:
    bundle = containers.bundle("/bin/cat", "/proc/sys/net/ipv4/ip_forward")
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": "1"}
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "1"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"


def test_sysctl_of_host_namespace_rejected(runtime: Runtime, containers: Containers) -> None:
    before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    bundle = containers.bundle("/bin/true")
    bundle.drop_namespace("network")
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.write()
    containers.track(bundle.id)
    result = runtime.create(bundle, check=False)
    assert result.returncode != 0
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before


def test_user_namespace_mappings(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.set_namespace("user")
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    # Host-owned (root) files inside a user namespace: sysfs and the cgroup mount need the
    # rootfs readable; a read-only root keeps that simple.
    report = run_probe(containers, bundle)
    assert report["uid_map"].split() == ["0", "200000", "65536"]
    assert report["gid_map"].split() == ["0", "200000", "65536"]
    assert report["uid"] == 0
    assert report["ns"]["user"] != host_ns("user")


def test_user_namespace_process_user_is_mapped(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.set_namespace("user")
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 1000}]
    bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 1000}]
    bundle.process["user"] = {"uid": 100, "gid": 100}
    bundle.config["mounts"] = [m for m in bundle.config["mounts"] if m["type"] != "cgroup"]
    bundle.config["mounts"].append(
        {"destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs", "options": []}
    )
    report = run_probe(containers, bundle)
    assert (report["uid"], report["gid"]) == (100, 100)
    with contextlib.suppress(KeyError):
        assert report["setgroups"].strip() in ("allow", "deny")


@pytest.mark.kettle_only
def test_time_namespace_offsets(containers: Containers) -> None:
    bundle = containers.bundle("/bin/cat", "/proc/uptime")
    bundle.set_namespace("time")
    bundle.linux["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert float(result.stdout.split()[0]) > 86400 * 365
