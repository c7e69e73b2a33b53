"""Escapes a container must not manage: overwriting the runtime's executable or source files
through /proc (CVE-2019-5736 class), reaching the host through a runtime process's root, cwd or
file descriptors, or picking up the caller's file descriptors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.containers import Containers
from tests.support.probe import parse_json_line, run_probe
from tests.support.runtime import Runtime
from tests.support.waiting import wait_for

pytestmark = pytest.mark.privileged


def test_runtime_binary_not_writable_from_container(
    runtime: Runtime, containers: Containers
) -> None:
    """A watcher inside the container opens every process that appears in its pid namespace
    while the runtime execs into it, including `exec /proc/self/exe` (the runtime's own
    executable, the classic attack), and tries to open their executables and regular-file
    descriptors for writing, both at once and (through an O_PATH fd) after they exit."""
    bundle = containers.bundle("/bin/probe", "cve-watch", "/tmp/stop-watching")
    bundle.add_tmp()
    containers.start(bundle)
    out = bundle.path / "create.out"
    wait_for(lambda: "ready" in out.read_text())
    for _ in range(5):
        runtime("exec", bundle.id, "/proc/self/exe", "--version", check=False, timeout=30)
        runtime("exec", bundle.id, "/bin/true", check=False, timeout=30)
        runtime("exec", bundle.id, "/bin/sh", "-c", "sleep 0.05", check=False, timeout=30)
    runtime("exec", bundle.id, "/bin/touch", "/tmp/stop-watching")
    runtime.wait_status(bundle.id, "stopped", timeout=30)
    report = parse_json_line(out.read_text())
    assert report["seen"], "the watcher saw no exec'd process: the test proved nothing"
    assert report["findings"] == []


def test_runtime_files_not_writable_through_proc(
    runtime: Runtime, containers: Containers, runtime_binary: Path
) -> None:
    """The files a host attacker would want to overwrite stay unchanged (and unopened for
    writing): the runtime's interpreter and kettle's own sources."""
    targets = [runtime_binary.resolve(), Path(sys.executable).resolve()]
    try:
        import kettle

        targets.append(Path(kettle.__file__).resolve())
    except ImportError:
        pass
    before = {t: (t.stat().st_mtime_ns, t.stat().st_size) for t in targets}
    test_runtime_binary_not_writable_from_container(runtime, containers)
    assert {t: (t.stat().st_mtime_ns, t.stat().st_size) for t in targets} == before


def test_no_host_fds_in_container(containers: Containers) -> None:
    # A file the caller has open (without CLOEXEC) must not reach the container.
    path = Path(containers.bundles.base) / "host-secret"
    path.write_text("secret")
    fd = os.open(path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        report = run_probe(containers, containers.bundle())
    finally:
        os.close(fd)
        path.unlink()
    assert sorted(map(int, report["fds"])) == [0, 1, 2]
    assert not any("host-secret" in target for target in report["fds"].values())


def test_exec_process_sees_no_runtime_fds(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    containers.start(bundle)
    report = parse_json_line(runtime("exec", bundle.id, "/bin/probe").stdout)
    assert sorted(map(int, report["fds"])) == [0, 1, 2]


def test_container_cannot_see_host_processes(containers: Containers) -> None:
    result = containers.run(containers.bundle("/bin/sh", "-c", "ls /proc | grep -c '^[0-9]'"))
    assert result.returncode == 0, result.describe()
    assert int(result.stdout.strip()) <= 3  # sh, ls, grep


def test_state_files_not_visible_in_container(runtime: Runtime, containers: Containers) -> None:
    report = run_probe(containers, containers.bundle())
    assert runtime.root is not None
    assert not any(str(runtime.root) in line.split()[4] for line in report["mountinfo"])
    assert json.dumps(report).count(str(runtime.root)) == 0
