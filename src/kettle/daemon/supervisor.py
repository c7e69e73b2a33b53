"""Restart policies at work: after each exit, decide (kettle.daemon.policy) and schedule.

One timer thread holds every pending restart in a heap, so a hundred crash-looping
containers cost one sleeping thread; the restarts themselves run on a small pool so that a
slow start does not delay the others' schedule.  The schedule lives in the container's record
(status restarting, next_restart_ns), so a restarted kettled takes it up where it was."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from kettle.daemon.store import EXITED, RESTARTING
from kettle.errors import KettleError

if TYPE_CHECKING:
    from kettle.daemon.containers import Containers
    from kettle.daemon.store import Record

log = logging.getLogger("kettled")
_WORKERS = 4


class Supervisor:
    def __init__(self, containers: Containers, clock: Callable[[], int] = time.time_ns) -> None:
        self.containers = containers
        self.clock = clock
        self._heap: list[tuple[int, str]] = []
        #: cid -> the due time of its one pending restart.
        self._due: dict[str, int] = {}
        self._cv = threading.Condition()
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="restart")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- decisions -----------------------------------------------------------------------------

    def exited(self, rec: Record, daemon_restart: bool = False) -> bool:
        """After rec's run ended (its exit recorded): schedule a restart if its policy says so.
        True when one was scheduled."""
        from kettle.daemon import policy

        if rec.auto_remove or rec.status != EXITED:
            return False
        req = self.containers.request(rec)
        defaults = policy.BackoffParams.from_config(self.containers.config.restart)
        params = policy.backoff_params(req.restart, defaults)
        if not policy.should_restart(
            policy.policy_of(req.restart),
            rec.exit_code,
            rec.restart_count,
            rec.stopped_by_user,
            daemon_restart,
        ):
            return False
        now = self.clock()
        exited = rec.finished_ns or now
        backoff = policy.next_backoff(rec.streak, rec.started_ns, exited, params)
        # Due counted from the exit (an exit kettled learns late, at start-up, is not made to
        # wait twice); a container brought back at start-up comes back at once, as Docker's.
        due = now if daemon_restart else max(backoff.due_ns(exited), now)
        streak = backoff.streak
        delay_ns = due - now
        rec.streak = streak
        rec.status = RESTARTING
        rec.next_restart_ns = due
        self.containers.store.update(rec)
        self.containers.publish(
            rec, "backoff", delay=f"{delay_ns / 1e9:.3f}s", restartCount=str(rec.restart_count)
        )
        self.schedule(rec.id, rec.next_restart_ns)
        return True

    # -- the timer -----------------------------------------------------------------------------

    def schedule(self, cid: str, due_ns: int) -> None:
        with self._cv:
            self._due[cid] = due_ns
            heapq.heappush(self._heap, (due_ns, cid))
            self._cv.notify()

    def cancel(self, cid: str) -> None:
        with self._cv:
            self._due.pop(cid, None)  # its heap entry is skipped when it comes up

    def pending(self, cid: str) -> int:
        with self._cv:
            return self._due.get(cid, 0)

    def _run(self) -> None:
        with self._cv:
            while not self._stopping:
                if not self._heap:
                    self._cv.wait()
                    continue
                due, cid = self._heap[0]
                now = self.clock()
                if due > now:
                    self._cv.wait((due - now) / 1e9)
                    continue
                heapq.heappop(self._heap)
                if self._due.get(cid) != due:
                    continue  # cancelled or rescheduled
                del self._due[cid]
                self._pool.submit(self._restart, cid, due)

    def _restart(self, cid: str, due: int) -> None:
        c = self.containers
        try:
            with c._lock(cid):
                rec = c.store.get(cid)
                if rec is None or rec.status != RESTARTING or rec.next_restart_ns != due:
                    return  # stopped, removed or started by the user meanwhile
                rec.restart_count += 1
                rec.next_restart_ns = 0
                try:
                    c._start(rec, by_policy=True)
                except KettleError as e:
                    log.error("container %s: restart failed: %s", cid, e)
                    rec = c.store.get(cid)
                    if rec is None:
                        return
                    rec.status = EXITED
                    rec.exit_code = 128
                    rec.last_exit_reason = "start-failed"
                    rec.finished_ns = self.clock()
                    c.store.update(rec)
                    self.exited(rec)
                    return
            c.publish(rec, "restart", restartCount=str(rec.restart_count))
        except Exception:
            log.exception("container %s: restart", cid)
