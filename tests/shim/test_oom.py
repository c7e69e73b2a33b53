"""OOM notification: cgroup v1 (eventfd on memory.oom_control) for real, cgroup v2's
memory.events logic on a file, and finding a process's memory cgroup."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from kettle.shim import oom
from kettle.shim.ioloop import IoLoop

V1_MEMORY = Path("/sys/fs/cgroup/memory")


def test_v2_counts_only_new_oom_kills(tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    seen: list[str] = []
    watcher = oom.OomWatcher(IoLoop(), seen.append)
    w = oom._Watch("c1", "v2", str(tmp_path))
    w.file_fd = os.open(events, os.O_RDONLY)
    w.kills = 1
    watcher._v2_event(w)  # a change that is not a kill (max went up)
    assert seen == []
    events.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    watcher._v2_event(w)
    assert seen == ["c1"]
    w.close()


def test_parse_keyed() -> None:
    assert oom.parse_keyed("oom_kill 3\nunder_oom 0\nbad\n") == {"oom_kill": 3, "under_oom": 0}


def test_memory_cgroup_of_this_process() -> None:
    found = oom.memory_cgroup(os.getpid())
    if found is None:
        pytest.skip("this process has no memory cgroup")
    kind, d = found
    assert kind in ("v1", "v2")
    assert os.path.isdir(d)


@pytest.mark.privileged
def test_v1_oom_kill_is_noticed() -> None:
    if not (V1_MEMORY / "cgroup.event_control").exists():
        pytest.skip("no cgroup v1 memory controller on this host")
    cg = V1_MEMORY / f"kettle-shim-oom-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    seen: list[str] = []
    got = threading.Event()

    def on_oom(cid: str) -> None:
        seen.append(cid)
        got.set()

    pid = 0
    watcher = oom.OomWatcher(IoLoop(), on_oom)
    try:
        (cg / "memory.limit_in_bytes").write_text(str(8 << 20))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # wait to be placed in the cgroup, then eat memory
            os.close(w)
            os.read(r, 1)
            chunks = []
            while True:
                chunks.append(bytearray(1 << 20))
        os.close(r)
        (cg / "cgroup.procs").write_text(str(pid))
        assert watcher.watch("victim", pid)
        os.write(w, b"x")
        os.close(w)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
        assert got.wait(5)
        assert seen == ["victim"]
        # Removing the cgroup signals the eventfd too: that is not an OOM.
        _rmdir(cg)
        time.sleep(0.3)
        assert seen == ["victim"]
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        watcher.unwatch("victim")
        _rmdir(cg)


def _rmdir(cg: Path) -> None:
    for _ in range(50):
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
