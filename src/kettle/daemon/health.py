"""Health checks, run by kettled itself (no systemd): Docker's rules and wording.

The state machine is pure (:func:`apply_result`): a container starts "starting"; a check that
exits 0 makes it "healthy" and clears the failing streak; any other result (a non-zero exit,
a timeout, a check that could not run) adds to the streak, except while the container is still
"starting" and inside its start period, and `retries` failures in a row make it "unhealthy".
The last 5 results are kept, their output cut at 4 KiB, as Docker does.

:class:`HealthMonitor` schedules the checks: one scheduler thread and a short-lived thread per
running check (a check may block up to its timeout), with the clock, the wait, the way checks are
spawned and the exec runner injected so tests drive it with a fake clock.  The next check of a
container is due `interval` after its previous one ended, as in Docker.
"""

from __future__ import annotations

import functools
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kettle.errors import FailedPrecondition, InvalidArgument, KettleError

if TYPE_CHECKING:
    from kettle.api.kettle_pb import Health, HealthConfig
    from kettle.daemon.containers import Containers
    from kettle.image.config import Healthcheck

log = logging.getLogger("kettled")

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
STATUSES = (STARTING, HEALTHY, UNHEALTHY)

#: Docker's defaults (HealthConfig fields that are 0).
DEFAULT_INTERVAL_NS = 30_000_000_000
DEFAULT_TIMEOUT_NS = 30_000_000_000
DEFAULT_RETRIES = 3
DEFAULT_START_PERIOD_NS = 0
#: Docker keeps this many results, each output cut at this many bytes.
MAX_LOG_ENTRIES = 5
MAX_OUTPUT_BYTES = 4096

ON_FAILURE_ACTIONS = ("none", "restart", "kill")

_NS = 1_000_000_000
_MS = 1_000_000

#: the exec runner: run(container id, argv, timeout in seconds) -> (exit code, output).
#: It raises TimeoutError when the check outlives its timeout.
Runner = Callable[[str, Sequence[str], float], tuple[int, bytes]]


def exec_runner(containers: Containers) -> Runner:
    """The monitor's runner on kettle.daemon.execs.run_exec (imported at the first check, not
    here: kettled's start-up does not pay for exec until a container has a health check)."""

    def run(cid: str, argv: Sequence[str], timeout_s: float) -> tuple[int, bytes]:
        from kettle.daemon import execs

        # One byte over the cut, so output_text knows there was more and adds "...".
        code, out = execs.run_exec(
            containers, cid, list(argv), timeout_s, max_output=MAX_OUTPUT_BYTES + 1
        )
        if code == execs.TIMEOUT_EXIT:  # no process exits -1: only a timeout says so
            raise TimeoutError(f"container {cid}: health check ran past {timeout_s:g}s")
        return code, out

    return run


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckConfig:
    """A container's resolved health check: what to run and when."""

    argv: tuple[str, ...]
    interval_ns: int = DEFAULT_INTERVAL_NS
    timeout_ns: int = DEFAULT_TIMEOUT_NS
    retries: int = DEFAULT_RETRIES
    start_period_ns: int = DEFAULT_START_PERIOD_NS
    #: none, restart or kill: what kettled does when the container turns unhealthy.
    on_failure: str = "none"


def check_argv(test: Sequence[str], what: str = "health.test") -> tuple[str, ...] | None:
    """The argv of Docker's HEALTHCHECK test form; None for ["NONE"].

    ["CMD", arg...] runs arg... as is; ["CMD-SHELL", script] runs /bin/sh -c script.
    """
    if not test:
        raise InvalidArgument(f"{what}: empty")
    kind, args = test[0], list(test[1:])
    if kind == "NONE":
        if args:
            raise InvalidArgument(f"{what}: NONE takes no arguments")
        return None
    if kind == "CMD":
        if not args or not args[0]:
            raise InvalidArgument(f"{what}: CMD needs a command")
        return tuple(args)
    if kind == "CMD-SHELL":
        if len(args) != 1 or not args[0]:
            raise InvalidArgument(f"{what}: CMD-SHELL needs exactly one script")
        return ("/bin/sh", "-c", args[0])
    raise InvalidArgument(f"{what}: {kind!r} is not CMD, CMD-SHELL or NONE")


def shell_test(cmd: str) -> list[str]:
    """`--health-cmd CMD` as Docker stores it."""
    return ["CMD-SHELL", cmd]


def _pick(name: str, ours: int, image: int, default: int) -> int:
    if ours < 0:
        raise InvalidArgument(f"health.{name} {ours}: must be >= 0")
    if image < 0:
        raise InvalidArgument(f"image healthcheck {name} {image}: must be >= 0")
    return ours or image or default


def resolve(msg: HealthConfig | None, image: Healthcheck | None) -> CheckConfig | None:
    """The check a container runs: --health-* flags over the image's HEALTHCHECK, field by
    field, 0 taking Docker's defaults; None when there is none (or --no-healthcheck, or
    NONE)."""
    if msg is not None and msg.disabled:
        return None
    test = list(msg.test) if msg is not None and msg.test else []
    what = "health.test"
    if not test and image is not None:
        test, what = list(image.test), "image healthcheck test"
    if not test:
        # Only knobs without a command (e.g. --health-interval on an image with none).
        if msg is not None and (
            msg.interval_ms or msg.timeout_ms or msg.retries or msg.start_period_ms
        ):
            raise InvalidArgument("health: interval/timeout/retries given without a command")
        return None
    argv = check_argv(test, what)
    if argv is None:
        return None
    on_failure = (msg.on_failure if msg is not None else "") or "none"
    if on_failure not in ON_FAILURE_ACTIONS:
        raise InvalidArgument(f"health.on_failure {on_failure!r}: none, restart or kill")
    img_interval = image.interval_ns if image else 0
    img_timeout = image.timeout_ns if image else 0
    img_retries = image.retries if image else 0
    img_start = image.start_period_ns if image else 0
    return CheckConfig(
        argv=argv,
        interval_ns=_pick(
            "interval_ms", (msg.interval_ms if msg else 0) * _MS, img_interval, DEFAULT_INTERVAL_NS
        ),
        timeout_ns=_pick(
            "timeout_ms", (msg.timeout_ms if msg else 0) * _MS, img_timeout, DEFAULT_TIMEOUT_NS
        ),
        retries=_pick("retries", msg.retries if msg else 0, img_retries, DEFAULT_RETRIES),
        start_period_ns=_pick(
            "start_period_ms",
            (msg.start_period_ms if msg else 0) * _MS,
            img_start,
            DEFAULT_START_PERIOD_NS,
        ),
        on_failure=on_failure,
    )


# -- state -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    start_ns: int
    end_ns: int
    exit_code: int
    output: str


@dataclass
class HealthState:
    """Record.health, as JSON: the fields of kettle.v1 Health."""

    status: str = STARTING
    failing_streak: int = 0
    log: list[Result] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "failing_streak": self.failing_streak,
            "log": [
                {
                    "start_ns": r.start_ns,
                    "end_ns": r.end_ns,
                    "exit_code": r.exit_code,
                    "output": r.output,
                }
                for r in self.log
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HealthState | None:
        """The state to_json wrote; None for "" (no check)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            status = str(data["status"])
            if status not in STATUSES:
                raise ValueError(f"status {status!r}")
            return cls(
                status=status,
                failing_streak=int(data["failing_streak"]),
                log=[
                    Result(
                        int(r["start_ns"]), int(r["end_ns"]), int(r["exit_code"]), str(r["output"])
                    )
                    for r in data["log"]
                ],
            )
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgument(f"health state {text[:80]!r}: {e}") from None

    def to_msg(self) -> Health:
        from kettle.api import kettle_pb as pb

        return pb.Health(
            status=self.status,
            failing_streak=self.failing_streak,
            log=[
                pb.HealthResult(
                    start_ns=r.start_ns, end_ns=r.end_ns, exit_code=r.exit_code, output=r.output
                )
                for r in self.log
            ],
        )


def output_text(raw: bytes) -> str:
    """Docker's limited buffer: the first 4 KiB, then "..." when there was more."""
    if len(raw) > MAX_OUTPUT_BYTES:
        return raw[:MAX_OUTPUT_BYTES].decode("utf-8", "replace") + "..."
    return raw.decode("utf-8", "replace")


def on_start(state: HealthState | None) -> HealthState:
    """A (re)started container is "starting" again with no failures; its log is kept."""
    return HealthState(STARTING, 0, list(state.log) if state else [])


def apply_result(
    state: HealthState, result: Result, config: CheckConfig, container_started_ns: int
) -> HealthState:
    """The state after one check (Docker's handleProbeResult)."""
    log_ = [*state.log, result][-MAX_LOG_ENTRIES:]
    if result.exit_code == 0:
        return HealthState(HEALTHY, 0, log_)
    if state.status == STARTING and result.start_ns - container_started_ns < config.start_period_ns:
        # Failures while the container is still starting up do not count.
        return HealthState(state.status, state.failing_streak, log_)
    streak = state.failing_streak + 1
    status = UNHEALTHY if streak >= config.retries else state.status
    return HealthState(status, streak, log_)


def failure_action(config: CheckConfig, old_status: str, new_status: str) -> str | None:
    """--health-on-failure's action ("restart", "kill") when a container turns unhealthy."""
    if new_status == UNHEALTHY and old_status != UNHEALTHY and config.on_failure != "none":
        return config.on_failure
    return None


# -- the monitor -------------------------------------------------------------------------------

#: on_change(container id, new state, previous status): the status changed.
OnChange = Callable[[str, HealthState, str], None]
#: on_result(container id, new state): after every check (kettled saves Record.health).
OnResult = Callable[[str, HealthState], None]


def _spawn_thread(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, name="health-check", daemon=True).start()


def _event_wait(wake: threading.Event, timeout_s: float | None) -> None:
    wake.wait(timeout_s)


@dataclass
class _Watch:
    config: CheckConfig
    started_ns: int
    state: HealthState
    #: bumped by each watch()/unwatch(): a check that finds it changed is dropped.
    generation: int
    running: bool = False


class HealthMonitor:
    """Runs each watched container's check on schedule and reports results and changes.

    run: the exec runner; clock: ns since the epoch; wait(event, timeout_s or None): sleep
    until the timeout or the event is set (a fake clock advances itself here); spawn(fn): run
    one check (default: a thread of its own; tests pass ``lambda fn: fn()``).
    """

    def __init__(
        self,
        run: Runner,
        on_change: OnChange | None = None,
        on_result: OnResult | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
        wait: Callable[[threading.Event, float | None], None] = _event_wait,
        spawn: Callable[[Callable[[], None]], None] = _spawn_thread,
    ) -> None:
        self._run = run
        self._on_change = on_change
        self._on_result = on_result
        self._clock = clock
        self._wait = wait
        self._spawn = spawn
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._watches: dict[str, _Watch] = {}
        #: (due ns, sequence, container id, generation); stale entries are skipped.
        self._due: list[tuple[int, int, str, int]] = []
        self._seq = 0
        self._generation = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._watches.clear()
            self._due.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def watch(
        self,
        cid: str,
        config: CheckConfig,
        started_ns: int,
        state: HealthState | None = None,
    ) -> HealthState:
        """Check cid from now on; the first check is due one interval from now.

        state: the state kept from before (Record.health after a daemon restart) to go on
        from; None for a container just started ("starting").
        """
        current = state if state is not None else on_start(None)
        with self._lock:
            if self._closed:
                raise FailedPrecondition("health monitor is closed")
            self._generation += 1
            self._watches[cid] = _Watch(config, started_ns, current, self._generation)
            self._schedule(cid, self._clock() + config.interval_ns)
        self._wake.set()
        return current

    def unwatch(self, cid: str) -> None:
        """Stop checking cid (stopped, removed); a check in flight is dropped."""
        with self._lock:
            self._watches.pop(cid, None)
        self._wake.set()

    def state(self, cid: str) -> HealthState | None:
        with self._lock:
            w = self._watches.get(cid)
            return None if w is None else w.state

    def watched(self) -> list[str]:
        with self._lock:
            return sorted(self._watches)

    # -- scheduling ------------------------------------------------------------------------

    def _schedule(self, cid: str, due_ns: int) -> None:
        """Under the lock."""
        self._seq += 1
        heapq.heappush(self._due, (due_ns, self._seq, cid, self._watches[cid].generation))

    def step(self) -> int | None:
        """Start every check that is due; the time the next one is due (None: none is)."""
        now = self._clock()
        ready: list[tuple[str, int]] = []
        with self._lock:
            while self._due and self._due[0][0] <= now:
                _due, _seq, cid, gen = heapq.heappop(self._due)
                w = self._watches.get(cid)
                if w is None or w.generation != gen or w.running:
                    continue
                w.running = True
                ready.append((cid, gen))
            next_due = self._next_due()
        for cid, gen in ready:
            self._spawn(functools.partial(self._check, cid, gen))
        if ready:
            with self._lock:
                next_due = self._next_due()
        return next_due

    def _next_due(self) -> int | None:
        """Under the lock: drop stale heads, then the earliest live due time."""
        while self._due:
            _due, _seq, cid, gen = self._due[0]
            w = self._watches.get(cid)
            if w is not None and w.generation == gen and not w.running:
                return self._due[0][0]
            heapq.heappop(self._due)
        return None

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            self._wake.clear()
            next_due = self.step()
            timeout = None if next_due is None else max(0.0, (next_due - self._clock()) / _NS)
            self._wait(self._wake, timeout)

    def _check(self, cid: str, gen: int) -> None:
        with self._lock:
            w = self._watches.get(cid)
            if w is None or w.generation != gen:
                return
            config = w.config
        start = self._clock()
        timeout_s = config.timeout_ns / _NS
        try:
            code, raw = self._run(cid, config.argv, timeout_s)
            output = output_text(raw)
        except TimeoutError:
            code, output = -1, f"Health check exceeded timeout ({timeout_s:g}s)"
        except KettleError as e:
            # The container went away or exec failed: a failed check, as in Docker.
            code, output = -1, str(e)
        except Exception as e:
            log.exception("container %s: health check runner failed", cid)
            code, output = -1, f"health check runner failed: {e}"
        end = self._clock()
        result = Result(start, end, code, output)
        with self._lock:
            w = self._watches.get(cid)
            if w is None or w.generation != gen:
                return  # unwatched or re-watched meanwhile: this result is stale
            old = w.state.status
            w.state = apply_result(w.state, result, w.config, w.started_ns)
            w.running = False
            new_state = w.state
            self._schedule(cid, end + w.config.interval_ns)
        self._wake.set()
        try:
            if self._on_result is not None:
                self._on_result(cid, new_state)
            if self._on_change is not None and new_state.status != old:
                self._on_change(cid, new_state, old)
        except Exception:
            # A callback's failure must not stop this container's checks; it is logged.
            log.exception("container %s: health callback failed", cid)
