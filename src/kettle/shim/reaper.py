"""Reaping every child of the shim, and routing exit statuses to whoever waits for them.

The shim is a child subreaper: container inits and exec'd processes become its children when
the runtime that started them exits, and orphans of containers without a pid namespace land
here too.  SIGCHLD wakes a pass of ``waitpid(-1, WNOHANG)``.

That loop would also steal the status of a child that other code waits for itself (the
runtime library's forks, hooks, a runtime binary the shim runs).  So such code runs inside
``hold()``: while any hold is active no pass runs; the process the code starts is registered
with ``watch()`` before the hold ends, and the pass that follows finds its exit.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def exit_status(wait_status: int) -> int:
    """containerd's exit status: the code, or 128+signal for a signalled process."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255


class Reaper:
    """``kick`` is called (from any thread) to ask for a reaping pass on the loop thread."""

    def __init__(self, kick: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._holds = 0
        self._pending = False
        self._watchers: dict[int, Callable[[int], None]] = {}
        self._kick = kick or (lambda: None)
        #: statuses of unwatched children (debugging aid; bounded)
        self.unclaimed = 0

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        """Call callback(exit_status) when pid is reaped.  Register inside a hold() that was
        active when the process was started, or the status may already be gone."""
        with self._lock:
            self._watchers[pid] = callback

    def unwatch(self, pid: int) -> None:
        with self._lock:
            self._watchers.pop(pid, None)

    def hold(self) -> _Hold:
        return _Hold(self)

    def _acquire(self) -> None:
        with self._lock:
            self._holds += 1

    def _release(self) -> None:
        with self._lock:
            self._holds -= 1
            run = self._holds == 0 and self._pending
        if run:
            self._kick()

    def reap(self) -> None:
        """One pass: reap every exited child, then run the callbacks (outside the lock)."""
        done: list[tuple[Callable[[int], None], int]] = []
        with self._lock:
            if self._holds:
                self._pending = True
                return
            self._pending = False
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                callback = self._watchers.pop(pid, None)
                if callback is None:
                    self.unclaimed += 1
                else:
                    done.append((callback, exit_status(status)))
        for callback, code in done:
            callback(code)


class _Hold:
    __slots__ = ("_reaper",)

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper

    def __enter__(self) -> None:
        self._reaper._acquire()

    def __exit__(self, *exc: object) -> None:
        self._reaper._release()


def wait_child(pid: int) -> int:
    """waitpid for a child started inside a hold (retrying on EINTR); returns the exit status."""
    _, status = os.waitpid(pid, 0)
    return exit_status(status)
