"""Restart policies, back-off and the ps status line: tables, with a fake clock."""

from __future__ import annotations

import pytest

from kettle.api import kettle_pb as pb
from kettle.daemon.config import RestartDefaults
from kettle.daemon.policy import (
    ALWAYS,
    NO,
    ON_FAILURE,
    UNLESS_STOPPED,
    Backoff,
    BackoffParams,
    Policy,
    backoff_params,
    check_auto_remove,
    delay_for,
    display_status,
    format_restart,
    human_duration,
    next_backoff,
    parse_restart,
    policy_of,
    short_duration,
    should_restart,
)
from kettle.errors import InvalidArgument

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S  # the fake clock's epoch

# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("", Policy(NO)),
        ("no", Policy(NO)),
        ("always", Policy(ALWAYS)),
        ("unless-stopped", Policy(UNLESS_STOPPED)),
        ("on-failure", Policy(ON_FAILURE, 0)),
        ("on-failure:3", Policy(ON_FAILURE, 3)),
        ("on-failure:0", Policy(ON_FAILURE, 0)),
    ],
)
def test_parse_restart(text: str, policy: Policy) -> None:
    assert parse_restart(text) == policy


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sometimes", "unknown policy"),
        ("always:3", "only valid with on-failure"),
        ("no:1", "only valid with on-failure"),
        ("on-failure:", "must be a number"),
        ("on-failure:-1", "must be a number"),
        ("on-failure:x", "must be a number"),
        ("On-Failure", "unknown policy"),
    ],
)
def test_parse_restart_refuses(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words) as e:
        parse_restart(text)
    assert repr(text) in str(e.value)


@pytest.mark.parametrize("text", ["no", "always", "unless-stopped", "on-failure", "on-failure:7"])
def test_format_restart_round_trips(text: str) -> None:
    assert format_restart(parse_restart(text)) == text


def test_policy_of_message() -> None:
    assert policy_of(None) == Policy(NO)
    assert policy_of(pb.RestartPolicy()) == Policy(NO)
    assert policy_of(pb.RestartPolicy(name="on-failure", max_retries=2)) == Policy(ON_FAILURE, 2)
    with pytest.raises(InvalidArgument, match=r"restart\.name"):
        policy_of(pb.RestartPolicy(name="bogus"))
    with pytest.raises(InvalidArgument, match=r"restart\.max_retries"):
        policy_of(pb.RestartPolicy(name="on-failure", max_retries=-1))
    with pytest.raises(InvalidArgument, match="only valid with on-failure"):
        policy_of(pb.RestartPolicy(name="always", max_retries=2))


def test_auto_remove_conflicts_with_a_policy() -> None:
    check_auto_remove(Policy(NO), True)
    check_auto_remove(Policy(ALWAYS), False)
    with pytest.raises(InvalidArgument, match="--restart always and --rm"):
        check_auto_remove(Policy(ALWAYS), True)


# -- should_restart ------------------------------------------------------------------------------

# (policy, exit code, restart count, stopped by user, daemon restart) -> restart?
DECISIONS = [
    # no: never
    ("no", 0, 0, False, False, False),
    ("no", 1, 0, False, False, False),
    ("no", 1, 0, False, True, False),
    # always: any exit, unless the user stopped it; a daemon restart brings it back regardless
    ("always", 0, 0, False, False, True),
    ("always", 1, 5, False, False, True),
    ("always", 137, 100, False, False, True),
    ("always", 143, 0, True, False, False),
    ("always", 143, 0, True, True, True),
    ("always", 0, 0, False, True, True),
    # unless-stopped: like always, but a user's stop holds across a daemon restart
    ("unless-stopped", 0, 0, False, False, True),
    ("unless-stopped", 1, 9, False, False, True),
    ("unless-stopped", 143, 0, True, False, False),
    ("unless-stopped", 143, 0, True, True, False),
    ("unless-stopped", 0, 0, False, True, True),
    # on-failure: non-zero exits only, counted against max
    ("on-failure", 0, 0, False, False, False),
    ("on-failure", 1, 0, False, False, True),
    ("on-failure", 1, 1000, False, False, True),  # max 0: unlimited
    ("on-failure:3", 1, 0, False, False, True),
    ("on-failure:3", 1, 2, False, False, True),
    ("on-failure:3", 1, 3, False, False, False),
    ("on-failure:3", 1, 4, False, False, False),
    ("on-failure:3", 0, 0, False, False, False),
    ("on-failure:3", 137, 1, False, False, True),
    ("on-failure:3", 137, 1, True, False, False),
    ("on-failure:3", 1, 1, False, True, True),
    ("on-failure:3", 1, 3, False, True, False),
    ("on-failure:3", 143, 0, True, True, False),
]


@pytest.mark.parametrize(("policy", "code", "count", "by_user", "daemon", "want"), DECISIONS)
def test_should_restart(
    policy: str, code: int, count: int, by_user: bool, daemon: bool, want: bool
) -> None:
    assert should_restart(parse_restart(policy), code, count, by_user, daemon) is want


def test_on_failure_3_restarts_exactly_three_times() -> None:
    """The supervisor's loop: exit 1 each time, count restarts until the policy says stop."""
    policy = parse_restart("on-failure:3")
    count = 0
    while should_restart(policy, 1, count, False, False):
        count += 1
        assert count < 10
    assert count == 3


# -- back-off ------------------------------------------------------------------------------------

K8S = BackoffParams()  # 1 s, x2, 5 min cap, reset after 10 min


def test_default_params_are_kettled_config_defaults() -> None:
    assert BackoffParams.from_config(RestartDefaults()) == K8S
    assert BackoffParams(1 * S, 300 * S, 2.0, 600 * S) == K8S


@pytest.mark.parametrize(
    ("streak", "delay_s"),
    [(0, 1), (1, 2), (2, 4), (3, 8), (7, 128), (8, 256), (9, 300), (10, 300), (10_000, 300)],
)
def test_delay_grows_then_caps(streak: int, delay_s: int) -> None:
    assert delay_for(streak, K8S) == delay_s * S


def test_delay_with_multiplier_one_is_constant() -> None:
    flat = BackoffParams(initial_ns=500 * MS, multiplier=1.0)
    assert [delay_for(n, flat) for n in (0, 1, 50)] == [500 * MS] * 3


def test_initial_above_cap_is_capped() -> None:
    assert delay_for(0, BackoffParams(initial_ns=10 * S, max_ns=3 * S)) == 3 * S


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, ns: int) -> int:
        self.now += ns
        return self.now


def test_crash_loop_schedule_with_fake_clock() -> None:
    """A container that dies 1 s after each start: 1, 2, 4, ... 256, 300, 300 s apart."""
    clock = FakeClock()
    streak = 0
    delays = []
    for _ in range(12):
        started = clock.now
        exited = clock.advance(1 * S)
        b = next_backoff(streak, started, exited, K8S)
        assert b.due_ns(exited) == exited + b.delay_ns
        delays.append(b.delay_ns // S)
        streak = b.streak
        clock.now = b.due_ns(exited)
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


@pytest.mark.parametrize(
    ("up_s", "want_s", "want_streak"),
    [
        (1, 32, 6),  # a quick crash: the streak goes on
        (599, 32, 6),  # just short of reset_after
        (600, 1, 1),  # up reset_after: back to the initial delay
        (3600, 1, 1),
    ],
)
def test_reset_after_long_enough_run(up_s: int, want_s: int, want_streak: int) -> None:
    started = T0
    b = next_backoff(5, started, started + up_s * S, K8S)
    assert b == Backoff(delay_ns=want_s * S, streak=want_streak)


def test_never_started_does_not_reset() -> None:
    """A start that failed (started_ns 0) is no long run."""
    assert next_backoff(3, 0, T0, K8S).delay_ns == 8 * S


def test_params_from_message_take_defaults_for_zero() -> None:
    assert backoff_params(None, K8S) == K8S
    assert backoff_params(pb.RestartPolicy(name="always"), K8S) == K8S
    custom = pb.RestartPolicy(
        name="always",
        initial_delay_ms=100,
        max_delay_ms=2000,
        multiplier_milli=1500,
        reset_after_ms=30_000,
    )
    p = backoff_params(custom, K8S)
    assert p == BackoffParams(100 * MS, 2 * S, 1.5, 30 * S)
    assert [delay_for(n, p) // MS for n in range(7)] == [100, 150, 225, 337, 506, 759, 1139]
    partial = backoff_params(pb.RestartPolicy(initial_delay_ms=50), K8S)
    assert partial == BackoffParams(50 * MS, K8S.max_ns, K8S.multiplier, K8S.reset_after_ns)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("multiplier_milli", 500, "must be >= 1000"),
        ("initial_delay_ms", -1, "restart.initial_delay_ms"),
        ("max_delay_ms", -5, "restart.max_delay_ms"),
        ("reset_after_ms", -5, "restart.reset_after_ms"),
    ],
)
def test_params_from_message_refuse_bad_values(field: str, value: int, words: str) -> None:
    msg = pb.RestartPolicy(name="always")
    setattr(msg, field, value)
    with pytest.raises(InvalidArgument, match=words):
        backoff_params(msg, K8S)


def test_params_refuse_a_shrinking_multiplier() -> None:
    with pytest.raises(InvalidArgument, match="multiplier"):
        BackoffParams(multiplier=0.5)


# -- status line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secs", "text"),
    [
        (0, "less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "1 minute"),
        (180, "3 minutes"),
        (3600, "1 hour"),
        (7300, "2 hours"),
        (86400 * 3, "3 days"),
        (-5, "less than a second"),
    ],
)
def test_human_duration(secs: int, text: str) -> None:
    assert human_duration(secs * S) == text


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (4 * S, "4s"),
        (3_200 * MS, "4s"),
        (60 * S, "1m"),
        (150 * S, "2m30s"),
        (3600 * S, "1h"),
        (3900 * S, "1h5m"),
    ],
)
def test_short_duration(ns: int, text: str) -> None:
    assert short_duration(ns) == text


NOW = T0 + 1000 * S

STATUSES: list[tuple[str, dict[str, object], str]] = [
    ("running", {"started_ns": NOW - 180 * S}, "Up 3 minutes"),
    ("running", {"started_ns": NOW - 60 * S, "health": "healthy"}, "Up 1 minute (healthy)"),
    (
        "running",
        {"started_ns": NOW - 5 * S, "health": "starting"},
        "Up 5 seconds (health: starting)",
    ),
    ("running", {"started_ns": NOW - 5 * S, "health": "unhealthy"}, "Up 5 seconds (unhealthy)"),
    ("running", {"started_ns": NOW}, "Up less than a second"),
    ("paused", {"started_ns": NOW - 7200 * S}, "Up 2 hours (Paused)"),
    ("exited", {"exit_code": 1, "finished_ns": NOW - 2 * S}, "Exited (1) 2 seconds ago"),
    (
        "exited",
        {"exit_code": 137, "finished_ns": NOW - 60 * S, "last_exit_reason": "oom"},
        "Exited (137) 1 minute ago (OOMKilled)",
    ),
    (
        "exited",
        {"exit_code": 137, "finished_ns": NOW - 60 * S, "last_exit_reason": "signal"},
        "Exited (137) 1 minute ago",
    ),
    (
        "restarting",
        {"exit_code": 1, "next_restart_ns": NOW + 4 * S},
        "Restarting (1) in 4s",
    ),
    (
        "restarting",
        {"exit_code": 1, "next_restart_ns": NOW + 150 * S, "restart_count": 4},
        "CrashLoopBackOff (1) in 2m30s, 4 restarts",
    ),
    (
        "restarting",
        {"exit_code": 2, "next_restart_ns": NOW + 1 * S, "restart_count": 1},
        "CrashLoopBackOff (2) in 1s, 1 restart",
    ),
    # due already (kettled is about to start it): no "in"
    ("restarting", {"exit_code": 1, "next_restart_ns": NOW - 1}, "Restarting (1)"),
    ("created", {}, "Created"),
]


@pytest.mark.parametrize(("status", "kw", "text"), STATUSES)
def test_display_status(status: str, kw: dict[str, object], text: str) -> None:
    assert display_status(status, NOW, **kw) == text  # type: ignore[arg-type]
