"""Reaping container processes that are reparented to the test process.

The test process is a child subreaper (PID 1 here never reaps), so container inits and exec'd
processes become its children once the runtime command that started them exits.  They must be
reaped promptly: when a pid-namespace init dies, the kernel holds it until every other process
of the namespace has been reaped, and `delete --force` then waits for an init that never ends.

Processes in a nested pid namespace (more NSpid levels than ours) are reaped at once.  Zombies
in our own pid namespace are usually subprocess.Popen children whose status belongs to their
wait(); one left unreaped for ORPHAN_GRACE seconds is an orphan that some test's process left
behind (it was reparented to us), and is reaped too so it cannot hide the others.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ORPHAN_GRACE = 3.0


def _nspid_depth(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return len(line.split()) - 1
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _start_time(pid: int) -> int:
    """The process's start time (clock ticks after boot), 0 if gone: with the pid, it names one
    process, so a reused pid is never mistaken for the zombie seen before."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


class Reaper(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="container-reaper", daemon=True)
        self._my_depth = _nspid_depth(os.getpid())
        self._resumed = threading.Event()
        self._resumed.set()
        self.reaped: list[int] = []
        self._first_seen: dict[tuple[int, int], float] = {}

    def run(self) -> None:
        while True:
            self._resumed.wait()
            try:
                # Peek (WNOWAIT) so that a Popen child's status stays for its own wait().
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            if info is None:
                continue
            if not self._resumed.is_set():
                continue
            pid = info.si_pid
            key = (pid, _start_time(pid))
            now = time.monotonic()
            first = self._first_seen.setdefault(key, now)
            if _nspid_depth(pid) > self._my_depth or now - first > ORPHAN_GRACE:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                    self.reaped.append(pid)
                self._first_seen.pop(key, None)
            else:
                # Some subprocess.Popen is about to reap this one; look again shortly.
                time.sleep(0.01)
                if len(self._first_seen) > 1000:
                    self._first_seen = {p: t for p, t in self._first_seen.items() if now - t < 60}

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No reaping inside this block (to observe a zombie init)."""
        self._resumed.clear()
        try:
            yield
        finally:
            self._resumed.set()


_reaper: Reaper | None = None


def start() -> Reaper:
    global _reaper
    if _reaper is None:
        _reaper = Reaper()
        _reaper.start()
    return _reaper
