"""Health checks: Docker's state machine, config resolution, and the monitor driven by a fake
clock and a fake exec runner."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import pytest

from kettle.api import kettle_pb as pb
from kettle.api.convert import from_dict
from kettle.daemon.health import (
    DEFAULT_INTERVAL_NS,
    HEALTHY,
    MAX_LOG_ENTRIES,
    MAX_OUTPUT_BYTES,
    STARTING,
    UNHEALTHY,
    CheckConfig,
    HealthMonitor,
    HealthState,
    Result,
    apply_result,
    check_argv,
    failure_action,
    on_start,
    output_text,
    resolve,
    shell_test,
)
from kettle.errors import FailedPrecondition, InvalidArgument, NotFound
from kettle.image.config import Healthcheck

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S

# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "argv"),
    [
        (["CMD", "curl", "-f", "http://x/"], ("curl", "-f", "http://x/")),
        (["CMD-SHELL", "test -e /ok || exit 1"], ("/bin/sh", "-c", "test -e /ok || exit 1")),
        (["NONE"], None),
        (shell_test("true"), ("/bin/sh", "-c", "true")),
    ],
)
def test_check_argv(test: list[str], argv: tuple[str, ...] | None) -> None:
    assert check_argv(test) == argv


@pytest.mark.parametrize(
    ("test", "words"),
    [
        ([], "empty"),
        (["CMD"], "CMD needs a command"),
        (["CMD", ""], "CMD needs a command"),
        (["CMD-SHELL"], "exactly one script"),
        (["CMD-SHELL", "a", "b"], "exactly one script"),
        (["NONE", "x"], "NONE takes no arguments"),
        (["RUN", "x"], "'RUN' is not CMD, CMD-SHELL or NONE"),
    ],
)
def test_check_argv_refuses(test: list[str], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        check_argv(test)


IMAGE = Healthcheck(
    test=("CMD-SHELL", "image-check"),
    interval_ns=5 * S,
    timeout_ns=2 * S,
    start_period_ns=10 * S,
    retries=7,
)


def test_resolve_defaults_are_dockers() -> None:
    got = resolve(pb.HealthConfig(test=["CMD", "true"]), None)
    assert got == CheckConfig(("true",), 30 * S, 30 * S, 3, 0, "none")


def test_resolve_takes_the_image_check() -> None:
    got = resolve(None, IMAGE)
    assert got == CheckConfig(("/bin/sh", "-c", "image-check"), 5 * S, 2 * S, 7, 10 * S, "none")
    assert resolve(pb.HealthConfig(), IMAGE) == got


def test_resolve_flags_override_the_image_field_by_field() -> None:
    msg = pb.HealthConfig(interval_ms=250, retries=2, on_failure="restart")
    got = resolve(msg, IMAGE)
    assert got == CheckConfig(
        ("/bin/sh", "-c", "image-check"), 250 * MS, 2 * S, 2, 10 * S, "restart"
    )
    msg = pb.HealthConfig(test=["CMD", "mine"], timeout_ms=100)
    assert resolve(msg, IMAGE) == CheckConfig(("mine",), 5 * S, 100 * MS, 7, 10 * S, "none")


def test_resolve_none_and_disabled() -> None:
    assert resolve(None, None) is None
    assert resolve(pb.HealthConfig(), None) is None
    assert resolve(pb.HealthConfig(disabled=True), IMAGE) is None
    assert resolve(pb.HealthConfig(test=["NONE"]), IMAGE) is None
    assert resolve(None, Healthcheck(test=("NONE",))) is None


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        (pb.HealthConfig(test=["CMD", "x"], on_failure="reboot"), "health.on_failure 'reboot'"),
        (pb.HealthConfig(test=["CMD", "x"], retries=-1), "health.retries -1"),
        (pb.HealthConfig(test=["CMD", "x"], interval_ms=-5), "health.interval_ms"),
        (pb.HealthConfig(interval_ms=5), "without a command"),
        (pb.HealthConfig(test=["SHELL", "x"]), "health.test"),
    ],
)
def test_resolve_refuses(msg: pb.HealthConfig, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        resolve(msg, None)


def test_resolve_names_a_bad_image_test() -> None:
    with pytest.raises(InvalidArgument, match="image healthcheck test"):
        resolve(None, Healthcheck(test=("BOGUS",)))


# -- the state machine -----------------------------------------------------------------------------

CFG = CheckConfig(("true",), interval_ns=1 * S, timeout_ns=1 * S, retries=3, start_period_ns=0)


def _r(at_s: float, code: int, out: str = "") -> Result:
    start = T0 + int(at_s * S)
    return Result(start, start + 10 * MS, code, out)


def test_success_makes_healthy_and_clears_the_streak() -> None:
    s = HealthState(STARTING, 2, [])
    s = apply_result(s, _r(1, 0, "ok"), CFG, T0)
    assert (s.status, s.failing_streak) == (HEALTHY, 0)


def test_retries_failures_in_a_row_make_unhealthy() -> None:
    s = apply_result(on_start(None), _r(1, 0), CFG, T0)
    seen = []
    for i in range(4):
        s = apply_result(s, _r(2 + i, 1), CFG, T0)
        seen.append((s.status, s.failing_streak))
    assert seen == [(HEALTHY, 1), (HEALTHY, 2), (UNHEALTHY, 3), (UNHEALTHY, 4)]
    s = apply_result(s, _r(9, 0), CFG, T0)
    assert (s.status, s.failing_streak) == (HEALTHY, 0)


def test_starting_container_fails_to_unhealthy_without_start_period() -> None:
    s = on_start(None)
    for i in range(3):
        s = apply_result(s, _r(i, 2), CFG, T0)
    assert (s.status, s.failing_streak) == (UNHEALTHY, 3)


def test_failures_inside_the_start_period_do_not_count() -> None:
    cfg = CheckConfig(("true",), 1 * S, 1 * S, retries=2, start_period_ns=10 * S)
    s = on_start(None)
    for at in (1, 5, 9.9):
        s = apply_result(s, _r(at, 1), cfg, T0)
    assert (s.status, s.failing_streak, len(s.log)) == (STARTING, 0, 3)
    s = apply_result(s, _r(10, 1), cfg, T0)  # the period is over
    assert (s.status, s.failing_streak) == (STARTING, 1)
    s = apply_result(s, _r(11, 1), cfg, T0)
    assert (s.status, s.failing_streak) == (UNHEALTHY, 2)


def test_start_period_only_shields_a_starting_container() -> None:
    cfg = CheckConfig(("true",), 1 * S, 1 * S, retries=1, start_period_ns=60 * S)
    s = apply_result(on_start(None), _r(1, 0), cfg, T0)
    s = apply_result(s, _r(2, 1), cfg, T0)  # healthy once: failures count at once
    assert (s.status, s.failing_streak) == (UNHEALTHY, 1)


def test_log_keeps_the_last_five() -> None:
    s = on_start(None)
    for i in range(8):
        s = apply_result(s, _r(i, 0, f"run {i}"), CFG, T0)
    assert len(s.log) == MAX_LOG_ENTRIES
    assert [r.output for r in s.log] == [f"run {i}" for i in range(3, 8)]


def test_output_is_cut_at_4_kib_like_docker() -> None:
    assert output_text(b"x" * MAX_OUTPUT_BYTES) == "x" * MAX_OUTPUT_BYTES
    assert output_text(b"y" * (MAX_OUTPUT_BYTES + 1)) == "y" * MAX_OUTPUT_BYTES + "..."
    assert output_text(b"caf\xc3\xa9\xff") == "caf\u00e9\ufffd"


def test_restart_resets_to_starting_and_keeps_the_log() -> None:
    s = HealthState(UNHEALTHY, 4, [_r(1, 1, "bad")])
    again = on_start(s)
    assert (again.status, again.failing_streak, again.log) == (STARTING, 0, s.log)


def test_failure_action() -> None:
    restart = CheckConfig(("x",), on_failure="restart")
    assert failure_action(restart, HEALTHY, UNHEALTHY) == "restart"
    assert failure_action(restart, STARTING, UNHEALTHY) == "restart"
    assert failure_action(restart, UNHEALTHY, UNHEALTHY) is None
    assert failure_action(restart, UNHEALTHY, HEALTHY) is None
    assert failure_action(CheckConfig(("x",), on_failure="kill"), HEALTHY, UNHEALTHY) == "kill"
    assert failure_action(CheckConfig(("x",)), HEALTHY, UNHEALTHY) is None


def test_json_round_trip_and_health_message() -> None:
    s = HealthState(UNHEALTHY, 3, [_r(1, 1, "no\n"), _r(2, -1, "timeout")])
    text = s.to_json()
    assert HealthState.from_json(text) == s
    assert HealthState.from_json("") is None
    msg = s.to_msg()
    assert (msg.status, msg.failing_streak, [r.output for r in msg.log]) == (
        UNHEALTHY,
        3,
        ["no\n", "timeout"],
    )
    # Record.health reads straight into kettle.v1 Health, as inspect shows it.
    import json

    assert from_dict(pb.Health, json.loads(text)) == msg


@pytest.mark.parametrize("text", ["{", '{"status": "ok", "failing_streak": 0, "log": []}', "[]"])
def test_from_json_refuses_garbage(text: str) -> None:
    with pytest.raises(InvalidArgument, match="health state"):
        HealthState.from_json(text)


# -- the monitor -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = T0
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            return self.now

    def advance(self, ns: int) -> None:
        with self.lock:
            self.now += ns


class FakeRunner:
    """Answers from a script of (exit code, output) per container; each check takes 10 ms of
    fake time; an exception in the script is raised instead."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, tuple[str, ...], float, int]] = []
        self.script: dict[str, list[tuple[int, bytes] | BaseException]] = {}

    def __call__(self, cid: str, argv: Sequence[str], timeout_s: float) -> tuple[int, bytes]:
        self.calls.append((cid, tuple(argv), timeout_s, self.clock()))
        self.clock.advance(10 * MS)
        answers = self.script.get(cid) or [(0, b"ok")]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []
        self.saved: dict[str, str] = {}

    def on_change(self, cid: str, state: HealthState, old: str) -> None:
        self.changes.append((cid, old, state.status))

    def on_result(self, cid: str, state: HealthState) -> None:
        self.saved[cid] = state.to_json()


def _sync_monitor() -> tuple[HealthMonitor, FakeClock, FakeRunner, Recorder]:
    clock = FakeClock()
    runner = FakeRunner(clock)
    rec = Recorder()
    mon = HealthMonitor(runner, rec.on_change, rec.on_result, clock=clock, spawn=lambda fn: fn())
    return mon, clock, runner, rec


def test_monitor_runs_a_check_each_interval_after_the_last_ended() -> None:
    mon, clock, runner, _rec = _sync_monitor()
    cfg = CheckConfig(("check",), interval_ns=5 * S, timeout_ns=2 * S)
    mon.watch("c1", cfg, started_ns=T0)
    assert mon.step() == T0 + 5 * S  # nothing due yet
    assert runner.calls == []
    clock.advance(5 * S)
    nxt = mon.step()
    assert runner.calls == [("c1", ("check",), 2.0, T0 + 5 * S)]
    # due one interval after the check ended (it took 10 ms)
    assert nxt == T0 + 10 * S + 10 * MS
    clock.advance(4 * S)
    mon.step()
    assert len(runner.calls) == 1
    clock.advance(2 * S)
    mon.step()
    assert len(runner.calls) == 2


def test_monitor_reports_changes_and_saves_every_result() -> None:
    mon, clock, runner, rec = _sync_monitor()
    cfg = CheckConfig(("check",), interval_ns=1 * S, retries=2)
    runner.script["c1"] = [(0, b"fine"), (1, b"bad"), (1, b"worse"), (0, b"back")]
    mon.watch("c1", cfg, started_ns=T0)
    for _ in range(4):
        clock.advance(2 * S)
        mon.step()
    assert rec.changes == [
        ("c1", STARTING, HEALTHY),
        ("c1", HEALTHY, UNHEALTHY),
        ("c1", UNHEALTHY, HEALTHY),
    ]
    saved = HealthState.from_json(rec.saved["c1"])
    assert saved is not None and saved == mon.state("c1")
    assert [r.output for r in saved.log] == ["fine", "bad", "worse", "back"]
    assert [r.exit_code for r in saved.log] == [0, 1, 1, 0]


def test_monitor_records_timeouts_and_exec_errors_as_failures() -> None:
    mon, clock, runner, _rec = _sync_monitor()
    cfg = CheckConfig(("check",), interval_ns=1 * S, timeout_ns=1_500 * MS, retries=5)
    runner.script["c1"] = [TimeoutError(), NotFound("container c1: no such process"), (0, b"")]
    mon.watch("c1", cfg, started_ns=T0)
    for _ in range(2):
        clock.advance(2 * S)
        mon.step()
    state = mon.state("c1")
    assert state is not None
    assert [(r.exit_code, r.output) for r in state.log] == [
        (-1, "Health check exceeded timeout (1.5s)"),
        (-1, "container c1: no such process"),
    ]
    assert state.failing_streak == 2


def test_monitor_keeps_containers_apart() -> None:
    mon, clock, runner, rec = _sync_monitor()
    runner.script["bad"] = [(1, b"no")]
    mon.watch("good", CheckConfig(("g",), interval_ns=1 * S, retries=1), T0)
    mon.watch("bad", CheckConfig(("b",), interval_ns=3 * S, retries=1), T0)
    clock.advance(3 * S)
    mon.step()
    assert sorted(c[0] for c in runner.calls) == ["bad", "good"]
    assert sorted(rec.changes) == [("bad", STARTING, UNHEALTHY), ("good", STARTING, HEALTHY)]
    assert mon.watched() == ["bad", "good"]


def test_unwatch_stops_checks_and_drops_a_check_in_flight() -> None:
    clock = FakeClock()
    rec = Recorder()
    pending: list[object] = []
    runner = FakeRunner(clock)
    mon = HealthMonitor(runner, rec.on_change, rec.on_result, clock=clock, spawn=pending.append)
    mon.watch("c1", CheckConfig(("x",), interval_ns=1 * S), T0)
    clock.advance(1 * S)
    mon.step()
    assert len(pending) == 1  # dispatched, not yet run
    mon.unwatch("c1")
    fn = pending.pop()
    assert callable(fn)
    fn()
    assert runner.calls == [] and rec.saved == {} and mon.state("c1") is None
    clock.advance(10 * S)
    assert mon.step() is None and pending == []


def test_a_check_is_not_started_twice_while_running() -> None:
    clock = FakeClock()
    pending: list[object] = []
    mon = HealthMonitor(FakeRunner(clock), clock=clock, spawn=pending.append)
    mon.watch("c1", CheckConfig(("x",), interval_ns=1 * S), T0)
    clock.advance(1 * S)
    mon.step()
    clock.advance(100 * S)
    assert mon.step() is None
    assert len(pending) == 1


def test_rewatch_after_daemon_restart_goes_on_from_the_saved_state() -> None:
    mon, clock, runner, rec = _sync_monitor()
    cfg = CheckConfig(("x",), interval_ns=1 * S, retries=3)
    kept = HealthState(HEALTHY, 2, [_r(0, 1, "bad"), _r(1, 1, "bad")])
    restored = HealthState.from_json(kept.to_json())
    assert restored is not None
    assert mon.watch("c1", cfg, started_ns=T0, state=restored) == kept
    runner.script["c1"] = [(1, b"bad again")]
    clock.advance(1 * S)
    mon.step()
    # the third failure in a row, counting the two from before the restart
    assert rec.changes == [("c1", HEALTHY, UNHEALTHY)]
    state = mon.state("c1")
    assert state is not None and state.failing_streak == 3 and len(state.log) == 3


def test_default_interval_first_check() -> None:
    mon, _clock, _runner, _rec = _sync_monitor()
    mon.watch("c1", CheckConfig(("x",)), started_ns=T0)
    assert mon.step() == T0 + DEFAULT_INTERVAL_NS


def test_a_failing_callback_does_not_stop_the_checks() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock)

    def boom(cid: str, state: HealthState) -> None:
        raise RuntimeError("store is down")

    mon = HealthMonitor(runner, on_result=boom, clock=clock, spawn=lambda fn: fn())
    mon.watch("c1", CheckConfig(("x",), interval_ns=1 * S), T0)
    for _ in range(3):
        clock.advance(2 * S)
        mon.step()
    assert len(runner.calls) == 3


def test_monitor_thread_with_fake_time() -> None:
    """The real scheduler thread: its waits advance the fake clock instead of sleeping, so
    a container turning unhealthy after three failures takes no real time."""
    clock = FakeClock()
    runner = FakeRunner(clock)
    runner.script["c1"] = [(0, b"up"), (1, b"down")]
    turned = threading.Event()
    changes: list[tuple[str, str]] = []

    def on_change(cid: str, state: HealthState, old: str) -> None:
        changes.append((old, state.status))
        if state.status == UNHEALTHY:
            turned.set()

    def fake_wait(wake: threading.Event, timeout_s: float | None) -> None:
        if timeout_s is None or wake.is_set():
            wake.wait(5)
        else:
            clock.advance(int(timeout_s * S))

    mon = HealthMonitor(runner, on_change, clock=clock, wait=fake_wait)
    mon.start()
    try:
        mon.watch("c1", CheckConfig(("x",), interval_ns=30 * S, retries=3), T0)
        assert turned.wait(30), changes
    finally:
        mon.close()
    assert changes == [(STARTING, HEALTHY), (HEALTHY, UNHEALTHY)]
    starts = [c[3] for c in runner.calls[:4]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == [30 * S + 10 * MS] * 3  # interval after each 10 ms check


def test_closed_monitor_refuses_watch() -> None:
    mon, _clock, _runner, _rec = _sync_monitor()
    mon.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        mon.watch("c1", CheckConfig(("x",)), T0)


def test_exec_runner_adapts_run_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    from kettle.daemon import execs, health

    calls: list[tuple[object, str, list[str], float, int]] = []
    answers = [(0, b"fine"), (execs.TIMEOUT_EXIT, b"partial")]

    def fake(
        containers: object, cid: str, args: list[str], timeout_s: float, *, max_output: int
    ) -> tuple[int, bytes]:
        calls.append((containers, cid, args, timeout_s, max_output))
        return answers.pop(0)

    monkeypatch.setattr(execs, "run_exec", fake)
    marker = object()
    run = health.exec_runner(marker)  # type: ignore[arg-type]
    assert run("c1", ("/bin/sh", "-c", "true"), 2.5) == (0, b"fine")
    assert calls == [(marker, "c1", ["/bin/sh", "-c", "true"], 2.5, MAX_OUTPUT_BYTES + 1)]
    with pytest.raises(TimeoutError):
        run("c1", ("x",), 1.0)
