"""Restart policies and crash-loop back-off end to end (issue 6), with short delays.

Times come from kettled's own log entries (each line of a run is stamped when kettled reads
it), so the gaps measured are start-to-start as the supervisor scheduled them.  Assertions on
timing are lower bounds (a restart is never early) and ordering (delays grow); upper bounds
are generous deadlines, never speed assertions."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from pathlib import Path

import pytest

from tests.daemon.conftest import Image, Kettled, wait_for

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="session")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", "-q", image.ref)
    return image.ref


def _name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def _inspect(k: Kettled, name: str) -> dict[str, object]:
    (item,) = json.loads(k.ok("inspect", name))
    assert isinstance(item, dict)
    return item


def _run_starts(k: Kettled, name: str) -> list[int]:
    """time_ns of every "run" line the container printed (one per run)."""
    cid = _inspect(k, name)["id"]
    path = Path(k.root) / "containers" / str(cid) / f"{cid}-json.log"
    starts = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["log"] == "run\n":
            starts.append(int(entry["time_ns"]))
    return starts


def _gaps(starts: list[int]) -> list[float]:
    return [(b - a) / 1e9 for a, b in itertools.pairwise(starts)]


def test_on_failure_restarts_exactly_max_times_with_growing_delays(
    kettled: Kettled, ref: str
) -> None:
    name = _name()
    kettled.ok("run", "-d", "--name", name, "--restart", "on-failure:3",
               "--restart-delay", "300ms", ref, "sh", "-c", "echo run; exit 1")  # fmt: skip
    try:
        wait_for(lambda: len(_run_starts(kettled, name)) == 4, "three restarts", timeout=60)
        wait_for(lambda: _inspect(kettled, name)["status"] == "exited", "the last exit")
        info = _inspect(kettled, name)
        assert info["restart_count"] == 3 and info["exit_code"] == 1
        assert info["last_exit_reason"] == "exit"
        gaps = _gaps(_run_starts(kettled, name))
        # 0.3, 0.6, 1.2 s from each exit: never earlier, and growing.
        assert [g >= d for g, d in zip(gaps, (0.3, 0.6, 1.2), strict=True)] == [True] * 3, gaps
        assert gaps[0] < gaps[1] < gaps[2], gaps
        time.sleep(2.5)  # more than twice the last delay: no fourth restart comes
        assert len(_run_starts(kettled, name)) == 4
        assert "Exited (1)" in kettled.ok("ps", "-a", "-f", f"name={name}")
    finally:
        kettled.kctl("rm", "-f", name)


def test_always_crash_loop_follows_the_schedule_and_shows_crashloopbackoff(
    kettled: Kettled, ref: str
) -> None:
    name = _name()
    kettled.ok("run", "-d", "--name", name, "--restart", "always", "--restart-delay", "200ms",
               "--restart-max-delay", "800ms", ref, "sh", "-c", "echo run; exit 2")  # fmt: skip
    try:
        wait_for(lambda: len(_run_starts(kettled, name)) >= 6, "five restarts", timeout=60)
        seen: set[str] = set()

        def crashlooping() -> bool:
            out = kettled.ok("ps", "-f", f"name={name}", "--format", "{{.Status}}")
            seen.add(out.strip())
            return "CrashLoopBackOff" in out

        wait_for(crashlooping, "CrashLoopBackOff in ps")
        info = _inspect(kettled, name)
        assert info["restart_policy"] == {"name": "always", "max_retries": 0}
        starts = _run_starts(kettled, name)
        gaps = _gaps(starts)[:5]
        # 0.2, 0.4, 0.8, then capped at 0.8
        for gap, delay in zip(gaps, (0.2, 0.4, 0.8, 0.8, 0.8), strict=True):
            assert gap >= delay, gaps
        assert gaps[0] < gaps[2], gaps
        kettled.ok("stop", name)
        assert _inspect(kettled, name)["status"] == "exited"
        count = len(_run_starts(kettled, name))
        time.sleep(1.5)
        assert len(_run_starts(kettled, name)) == count, "stop did not end the restarts"
    finally:
        kettled.kctl("rm", "-f", name)


def test_stop_and_rm_interrupt_a_pending_restart_at_once(kettled: Kettled, ref: str) -> None:
    a, b = _name(), _name()
    for n in (a, b):
        kettled.ok("run", "-d", "--name", n, "--restart", "always", "--restart-delay", "30s",
                   ref, "sh", "-c", "echo run; exit 3")  # fmt: skip
    try:
        for n in (a, b):
            wait_for(lambda n=n: _inspect(kettled, n)["status"] == "restarting", "a back-off")
            assert int(str(_inspect(kettled, n)["next_restart_ns"])) > time.time_ns()
        kettled.ok("stop", a)
        info = _inspect(kettled, a)
        assert info["status"] == "exited" and info["next_restart_ns"] == 0
        kettled.ok("rm", b)
        assert kettled.kctl("inspect", b).returncode != 0
    finally:
        kettled.kctl("rm", "-f", a, b)


def test_update_restart_changes_a_live_containers_policy(kettled: Kettled, ref: str) -> None:
    name = _name()
    flag = "/tmp/go"
    script = f"echo run; while [ ! -e {flag} ]; do sleep 0.05; done; exit 4"
    kettled.ok("run", "-d", "--name", name, ref, "sh", "-c", script)
    try:
        kettled.ok("update", "--restart", "on-failure:1", name)
        assert _inspect(kettled, name)["restart_policy"] == {"name": "on-failure", "max_retries": 1}
        pid = _inspect(kettled, name)["pid"]
        Path(f"/proc/{pid}/root{flag}").touch()
        # The flag stays in the container's filesystem: the second run exits at once.
        wait_for(lambda: len(_run_starts(kettled, name)) == 2, "one restart", timeout=30)
        wait_for(lambda: _inspect(kettled, name)["status"] == "exited", "the final exit")
        assert _inspect(kettled, name)["restart_count"] == 1
        res = kettled.kctl("update", "--restart", "sometimes", name)
        assert res.returncode != 0 and "sometimes" in res.stderr
    finally:
        kettled.kctl("rm", "-f", name)


def test_oom_kill_is_reported(kettled: Kettled, ref: str) -> None:
    name = _name()
    hog = "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"
    kettled.ok("run", "-d", "--name", name, "--memory", "16m", "--memory-swap", "16m", ref,
               "sh", "-c", hog)  # fmt: skip
    try:
        wait_for(lambda: _inspect(kettled, name)["status"] == "exited", "the OOM kill")
        wait_for(lambda: _inspect(kettled, name)["oom_killed"] is True, "the OOM event")
        info = _inspect(kettled, name)
        assert info["exit_code"] == 137 and info["last_exit_reason"] == "oom"
        assert "OOMKilled" in kettled.ok("ps", "-a", "-f", f"name={name}")
    finally:
        kettled.kctl("rm", "-f", name)


def test_a_restarted_kettled_keeps_the_backoff_schedule(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "-d", "--name", name, "--restart", "always", "--restart-delay", "4s",
               ref, "sh", "-c", "echo run; exit 5")  # fmt: skip
    try:
        wait_for(lambda: _inspect(kettled, name)["status"] == "restarting", "the back-off")
        due = int(str(_inspect(kettled, name)["next_restart_ns"]))
        kettled.kill9()
        kettled.start()
        info = _inspect(kettled, name)
        assert info["status"] == "restarting" and info["next_restart_ns"] == due
        wait_for(lambda: len(_run_starts(kettled, name)) >= 2, "the restart", timeout=30)
        second = _run_starts(kettled, name)[1]
        assert second >= due, "restarted before its time"
    finally:
        kettled.kctl("rm", "-f", name)


def test_always_containers_come_back_after_kettled_restarts(kettled: Kettled, ref: str) -> None:
    always, plain = _name(), _name()
    kettled.ok("run", "-d", "--name", always, "--restart", "unless-stopped", ref,
               "sh", "-c", "echo run; exec sleep 1000")  # fmt: skip
    kettled.ok("run", "-d", "--name", plain, ref, "sh", "-c", "echo run; exec sleep 1000")
    try:
        pids = {n: _inspect(kettled, n)["pid"] for n in (always, plain)}
        kettled.kill9()
        import os
        import signal

        for pid in pids.values():  # both die while kettled is away (a crash, not a stop)
            assert isinstance(pid, int)
            os.kill(pid, signal.SIGKILL)
        kettled.start()
        wait_for(lambda: len(_run_starts(kettled, always)) == 2, "the policy's restart")
        wait_for(lambda: _inspect(kettled, always)["status"] == "running", "running again")
        wait_for(lambda: _inspect(kettled, plain)["status"] == "exited", "plain's exit")
        assert len(_run_starts(kettled, plain)) == 1
    finally:
        kettled.kctl("rm", "-f", always, plain)


def test_health_check_flips_status_and_restarts_on_failure(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "-d", "--name", name, "--health-cmd", "test -e /tmp/healthy",
               "--health-interval", "300ms", "--health-retries", "2",
               "--health-on-failure", "restart", ref,
               "sh", "-c", "echo run; touch /tmp/healthy; exec sleep 1000")  # fmt: skip
    try:

        def health() -> str:
            h = _inspect(kettled, name)["health"]
            return str(h["status"]) if isinstance(h, dict) else ""

        wait_for(lambda: health() == "healthy", "healthy")
        assert "(healthy)" in kettled.ok("ps", "-f", f"name={name}")
        first_pid = _inspect(kettled, name)["pid"]
        Path(f"/proc/{first_pid}/root/tmp/healthy").unlink()
        # Unhealthy after two failures in a row, then --health-on-failure restart: a new run.
        wait_for(lambda: len(_run_starts(kettled, name)) >= 2, "the restart", timeout=60)
        wait_for(lambda: _inspect(kettled, name)["status"] == "running", "running again")
        assert _inspect(kettled, name)["pid"] != first_pid
        h = _inspect(kettled, name)["health"]
        assert isinstance(h, dict) and h["log"], "the results are kept"
    finally:
        kettled.kctl("rm", "-f", name)


def test_health_status_without_action_and_no_healthcheck(kettled: Kettled, ref: str) -> None:
    sick, none = _name(), _name()
    kettled.ok("run", "-d", "--name", sick, "--health-cmd", "echo nope; exit 1",
               "--health-interval", "200ms", "--health-retries", "1", ref,
               "sleep", "1000")  # fmt: skip
    kettled.ok("run", "-d", "--name", none, "--no-healthcheck", ref, "sleep", "1000")
    try:

        def status() -> object:
            h = _inspect(kettled, sick)["health"]
            return h["status"] if isinstance(h, dict) else None

        wait_for(lambda: status() == "unhealthy", "unhealthy")
        h = _inspect(kettled, sick)["health"]
        assert isinstance(h, dict) and "nope" in h["log"][-1]["output"]
        assert _inspect(kettled, sick)["status"] == "running", "on-failure none: left running"
        assert _inspect(kettled, none)["health"] is None
    finally:
        kettled.kctl("rm", "-f", sick, none)


def test_replicas_scale_and_remove_leave_nothing(kettled: Kettled, ref: str) -> None:
    group = _name()
    out = kettled.ok("run", "--replicas", "5", "--name", group, "--restart", "always",
                     ref, "sh", "-c", "echo hi; exec sleep 1000")  # fmt: skip
    try:
        assert out.split() == [f"{group}-{i}" for i in range(1, 6)]

        def members(*flags: str) -> list[str]:
            found = kettled.ok("ps", *flags, "-f", f"group={group}", "--format", "{{.Names}}")
            return sorted(found.split())

        assert members() == sorted(f"{group}-{i}" for i in range(1, 6))
        # each member is supervised on its own: one killed from outside comes back
        pid = _inspect(kettled, f"{group}-3")["pid"]
        assert isinstance(pid, int)
        import os
        import signal

        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _inspect(kettled, f"{group}-3")["restart_count"] == 1, "its restart")
        kettled.ok("scale", f"{group}=2")
        assert members("-a") == [f"{group}-1", f"{group}-2"]
        kettled.ok("scale", f"{group}=4")
        wait_for(lambda: len(members()) == 4, "four running members")
        res = kettled.kctl("run", "--replicas", "2", "--name", group, ref, "true")
        assert res.returncode != 0 and "already exists" in res.stderr
        # The group's logs, each line marked with its member (-3 and -4 are new ones).
        wait_for(lambda: kettled.ok("logs", group).count("| hi") == 4, "every member's line")
        lines = sorted(kettled.ok("logs", group).splitlines())
        expected = [f"{group}-{i} | hi" for i in (1, 2, 3, 4)]
        assert lines == sorted(expected), lines
        kettled.ok("rm", group)
        assert members("-a") == []
        assert kettled.kctl("scale", f"{group}=1").returncode != 0
    finally:
        kettled.kctl("rm", "-f", group)
