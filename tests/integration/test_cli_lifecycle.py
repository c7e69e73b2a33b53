"""create / start / state / run / kill / delete through the runc command line."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import leaks
from tests.support.containers import Containers
from tests.support.reaper import Reaper
from tests.support.runtime import Runtime
from tests.support.waiting import wait_for

pytestmark = pytest.mark.privileged

STATE_FIELDS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}


def test_create_start_state_transitions(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sh", "-c", "echo started; exec sleep 600")
    state = containers.create(bundle)
    assert state.keys() >= STATE_FIELDS
    assert state["id"] == bundle.id
    assert state["status"] == "created"
    assert state["bundle"] == str(bundle.path)
    assert state["rootfs"] == str(bundle.rootfs)
    assert state["pid"] > 0 and leaks.alive(state["pid"])
    created = datetime.datetime.fromisoformat(state["created"][:26].rstrip("Z") + "+00:00")
    assert abs(created - datetime.datetime.now(datetime.UTC)).total_seconds() < 120
    # The user process has not been exec'd before start.
    assert "started" not in (bundle.path / "create.out").read_text()

    runtime.start(bundle.id)
    state = runtime.state(bundle.id)
    assert state["status"] == "running"
    wait_for(lambda: "started" in (bundle.path / "create.out").read_text(), what="output")

    runtime.kill(bundle.id, "KILL")
    state = runtime.wait_status(bundle.id, "stopped")
    assert state["pid"] == 0
    runtime.delete(bundle.id)
    result = runtime("state", bundle.id, check=False)
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_state_detects_dead_init_without_reaping(
    runtime: Runtime, containers: Containers, container_reaper: Reaper
) -> None:
    bundle = containers.bundle("/bin/true")
    with container_reaper.paused():
        pid = containers.create(bundle)["pid"]
        runtime.start(bundle.id)
        state = runtime.wait_status(bundle.id, "stopped")
        assert state["pid"] == 0
        # Nobody reaped the init: it is still our (the subreaper's) zombie.
        assert leaks.process_state(pid) == "Z"
        assert leaks.parent_pid(pid) == os.getpid()


def test_run_foreground_prints_and_exits_zero(containers: Containers) -> None:
    bundle = containers.bundle("/bin/echo", "hello from inside")
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "hello from inside\n"


@pytest.mark.parametrize("code", [3, 42])
def test_run_propagates_exit_code(containers: Containers, code: int) -> None:
    result = containers.run(containers.bundle("/bin/sh", "-c", f"exit {code}"))
    assert result.returncode == code, result.describe()


def test_run_propagates_death_by_signal(containers: Containers) -> None:
    # Without a pid namespace the shell is not an init, so it can kill itself.
    bundle = containers.bundle("/bin/sh", "-c", "kill -9 $$")
    bundle.drop_namespace("pid")
    result = containers.run(bundle)
    assert result.returncode == 128 + signal.SIGKILL, result.describe()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_run_forwards_signals(
    runtime: Runtime, containers: Containers, sig: signal.Signals
) -> None:
    name = sig.name[3:]
    script = f"trap 'echo got-{name}; exit 7' {name}; echo ready; while :; do sleep 0.05; done"
    bundle = containers.bundle("/bin/sh", "-c", script)
    bundle.write()
    containers.track(bundle.id)
    proc = subprocess.Popen(
        runtime.argv("run", "--bundle", str(bundle.path), bundle.id),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out == f"got-{name}\n", err
    assert proc.returncode == 7, err


def test_run_detach(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    bundle.write()
    containers.track(bundle.id)
    result = runtime(
        "run", "--detach", "--bundle", str(bundle.path), bundle.id, output=bundle.path / "out"
    )
    assert result.returncode == 0
    state = runtime.state(bundle.id)
    containers.track(bundle.id, state["pid"])
    assert state["status"] == "running"
    assert leaks.alive(state["pid"])


def test_pid_file_written(runtime: Runtime, containers: Containers, tmp_path: Path) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    pid_file = tmp_path / "init.pid"
    state = containers.create(bundle, "--pid-file", str(pid_file))
    assert pid_file.read_text().strip() == str(state["pid"])
    assert pid_file.read_text().isdigit() or pid_file.read_text().rstrip("\n").isdigit()


def test_pid_file_relative_to_cwd(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    bundle.write()
    containers.track(bundle.id)
    runtime(
        "create",
        "--pid-file",
        "rel.pid",
        "--bundle",
        str(bundle.path),
        bundle.id,
        cwd=bundle.path,
        output=bundle.path / "out",
    )
    state = runtime.state(bundle.id)
    containers.track(bundle.id, state["pid"])
    assert (bundle.path / "rel.pid").read_text().strip() == str(state["pid"])


def test_bundle_defaults_to_cwd(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    containers.track(bundle.id)
    runtime("create", bundle.id, cwd=bundle.path, output=bundle.path / "out")
    state = runtime.state(bundle.id)
    containers.track(bundle.id, state["pid"])
    assert state["bundle"] == str(bundle.path)


# ---- kill -------------------------------------------------------------------------------------

TRAPS = "; ".join(f"trap 'echo got-{s}' {s}" for s in ("HUP", "USR1", "USR2", "TERM"))


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("USR1", "USR1"),
        ("SIGUSR2", "USR2"),
        ("usr1", "USR1"),
        ("sigusr2", "USR2"),
        (str(int(signal.SIGHUP)), "HUP"),
        (None, "TERM"),  # the default signal
    ],
)
def test_kill_signal_spellings(
    runtime: Runtime, containers: Containers, spelling: str | None, expected: str
) -> None:
    script = f"{TRAPS}; echo ready; while :; do sleep 0.05; done"
    bundle = containers.bundle("/bin/sh", "-c", script)
    containers.start(bundle)
    out = bundle.path / "create.out"
    wait_for(lambda: "ready" in out.read_text(), what="container ready")
    runtime("kill", bundle.id, *([spelling] if spelling else []))
    wait_for(lambda: f"got-{expected}" in out.read_text(), what=f"SIG{expected} delivered")
    assert out.read_text().count("got-") == 1


def test_kill_all_kills_every_process(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sh", "-c", "sleep 600 & sleep 600 & echo ready; wait")
    state = containers.start(bundle)
    out = bundle.path / "create.out"
    wait_for(lambda: "ready" in out.read_text(), what="container ready")
    pids = [int(p) for p in json.loads(runtime("ps", "--format", "json", bundle.id).stdout)]
    assert state["pid"] in pids and len(pids) == 3
    runtime("kill", "--all", bundle.id, "KILL")
    runtime.wait_status(bundle.id, "stopped")
    assert leaks.wait_gone(pids) == []


def test_kill_stopped_container_fails(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    containers.start(bundle)
    runtime.wait_status(bundle.id, "stopped")
    result = runtime.kill(bundle.id, "KILL", check=False)
    assert result.returncode != 0


# ---- delete -----------------------------------------------------------------------------------


def test_delete_stopped(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    containers.start(bundle)
    runtime.wait_status(bundle.id, "stopped")
    runtime.delete(bundle.id)
    assert runtime("state", bundle.id, check=False).returncode == 1
    assert bundle.id not in runtime("list", "--quiet").stdout.split()


def test_delete_running_requires_force(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    pid = containers.start(bundle)["pid"]
    result = runtime.delete(bundle.id, check=False)
    assert result.returncode == 1
    assert "cannot delete container" in result.stderr
    assert runtime.state(bundle.id)["status"] == "running"
    runtime.delete(bundle.id, force=True)
    assert leaks.wait_gone([pid]) == []
    assert runtime("state", bundle.id, check=False).returncode == 1


def test_delete_created_kills_init(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    pid = containers.create(bundle)["pid"]
    runtime.delete(bundle.id)
    assert leaks.wait_gone([pid]) == []
    assert runtime("state", bundle.id, check=False).returncode == 1


def test_delete_force_of_unknown_id_succeeds(runtime: Runtime) -> None:
    assert runtime("delete", "--force", "kt-never-existed").returncode == 0


def test_start_twice_fails(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    containers.start(bundle)
    result = runtime.start(bundle.id, check=False)
    assert result.returncode == 1
    assert runtime.state(bundle.id)["status"] == "running"


def test_create_existing_id_fails(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    containers.create(bundle)
    result = runtime.create(bundle, check=False)
    assert result.returncode == 1
    assert runtime.state(bundle.id)["status"] == "created"
