"""Restart policies, crash-loop back-off and the status line `kctl ps` shows.

Pure: no I/O and no clock reads (every time is passed in, in nanoseconds since the epoch), so
the supervisor's decisions are table-tested with a fake clock.

Docker's meaning of the policies:

- ``no``: never restarted.
- ``on-failure[:max]``: restarted after a non-zero exit, at most ``max`` times (0: no limit).
- ``always``: restarted after any exit; also brought back when kettled starts, even if the
  user had stopped it (Docker: "if it is manually stopped, it is restarted only when the
  daemon restarts").
- ``unless-stopped``: like ``always``, except that a container the user stopped stays stopped
  across a daemon restart too.

A container the user stopped (``Record.stopped_by_user``) is never restarted by its own exit.
"""

from __future__ import annotations

from dataclasses import dataclass

from kettle.errors import InvalidArgument

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: kettled imports this on every exit
if TYPE_CHECKING:
    from kettle.api.kettle_pb import RestartPolicy as PolicyMsg
    from kettle.daemon.config import RestartDefaults

NO = "no"
ON_FAILURE = "on-failure"
ALWAYS = "always"
UNLESS_STOPPED = "unless-stopped"
POLICIES = (NO, ON_FAILURE, ALWAYS, UNLESS_STOPPED)

_NS = 1_000_000_000
_MS = 1_000_000


# -- policies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A restart policy: its name and, for on-failure, the most restarts (0: unlimited)."""

    name: str = NO
    max_retries: int = 0


def parse_restart(text: str) -> Policy:
    """`--restart` as Docker takes it: no, on-failure[:N], always, unless-stopped ("" = no)."""
    name, colon, count = text.partition(":")
    if name == "":
        name = NO
    if name not in POLICIES:
        raise InvalidArgument(
            f"--restart {text!r}: unknown policy (no, on-failure[:max-retries], always, "
            "unless-stopped)"
        )
    if not colon:
        return Policy(name)
    if name != ON_FAILURE:
        raise InvalidArgument(
            f"--restart {text!r}: a maximum retry count is only valid with on-failure"
        )
    if not count.isdigit():
        raise InvalidArgument(f"--restart {text!r}: the maximum retry count must be a number >= 0")
    return Policy(name, int(count))


def format_restart(policy: Policy) -> str:
    """The inverse of parse_restart ("on-failure:3", "always", "no")."""
    if policy.name == ON_FAILURE and policy.max_retries:
        return f"{ON_FAILURE}:{policy.max_retries}"
    return policy.name or NO


def policy_of(msg: PolicyMsg | None) -> Policy:
    """The policy a kettle.v1 RestartPolicy names, checked ("" and None: no)."""
    if msg is None or not msg.name:
        return Policy(NO)
    if msg.name not in POLICIES:
        raise InvalidArgument(f"restart.name {msg.name!r}: unknown policy")
    if msg.max_retries < 0:
        raise InvalidArgument(f"restart.max_retries {msg.max_retries}: must be >= 0")
    if msg.max_retries and msg.name != ON_FAILURE:
        raise InvalidArgument(f"restart.max_retries: only valid with on-failure, not {msg.name!r}")
    return Policy(msg.name, msg.max_retries)


def check_auto_remove(policy: Policy, auto_remove: bool) -> None:
    """Docker refuses --rm with a restart policy: one removes what the other would restart."""
    if auto_remove and policy.name != NO:
        raise InvalidArgument(f"conflicting options: --restart {format_restart(policy)} and --rm")


def should_restart(
    policy: Policy,
    exit_code: int,
    restart_count: int,
    stopped_by_user: bool,
    daemon_restart: bool,
) -> bool:
    """Whether to restart a container that is not running.

    exit_code: how its last run ended; restart_count: restarts so far (the count on-failure's
    maximum is held against); daemon_restart: the question is asked at kettled's start-up for
    a container found stopped, rather than at the container's own exit.
    """
    if policy.name == ALWAYS:
        # Only a daemon restart brings back an `always` container the user stopped.
        return daemon_restart or not stopped_by_user
    if stopped_by_user:
        return False
    if policy.name == UNLESS_STOPPED:
        return True
    if policy.name == ON_FAILURE:
        under_max = policy.max_retries == 0 or restart_count < policy.max_retries
        return exit_code != 0 and under_max
    return False


# -- back-off ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackoffParams:
    """Exponential back-off: initial, times multiplier per restart, capped at max; the streak starts
    again once a run has lasted reset_after."""

    initial_ns: int = 1 * _NS
    max_ns: int = 300 * _NS
    multiplier: float = 2.0
    reset_after_ns: int = 600 * _NS

    def __post_init__(self) -> None:
        if self.initial_ns < 0 or self.max_ns < 0 or self.reset_after_ns < 0:
            raise InvalidArgument(f"restart back-off: negative duration in {self}")
        if self.multiplier < 1:
            raise InvalidArgument(f"restart back-off: multiplier {self.multiplier} must be >= 1")

    @classmethod
    def from_config(cls, defaults: RestartDefaults) -> BackoffParams:
        return cls(
            initial_ns=round(defaults.initial_delay_s * _NS),
            max_ns=round(defaults.max_delay_s * _NS),
            multiplier=float(defaults.multiplier),
            reset_after_ns=round(defaults.reset_after_s * _NS),
        )


def backoff_params(msg: PolicyMsg | None, defaults: BackoffParams) -> BackoffParams:
    """A container's back-off: each field of its RestartPolicy, 0 taking kettled's default."""
    if msg is None:
        return defaults
    for name in ("initial_delay_ms", "max_delay_ms", "reset_after_ms", "multiplier_milli"):
        if getattr(msg, name) < 0:
            raise InvalidArgument(f"restart.{name} {getattr(msg, name)}: must be >= 0")
    if 0 < msg.multiplier_milli < 1000:
        raise InvalidArgument(
            f"restart.multiplier_milli {msg.multiplier_milli}: must be >= 1000 (x1)"
        )
    return BackoffParams(
        initial_ns=msg.initial_delay_ms * _MS if msg.initial_delay_ms else defaults.initial_ns,
        max_ns=msg.max_delay_ms * _MS if msg.max_delay_ms else defaults.max_ns,
        multiplier=msg.multiplier_milli / 1000 if msg.multiplier_milli else defaults.multiplier,
        reset_after_ns=msg.reset_after_ms * _MS if msg.reset_after_ms else defaults.reset_after_ns,
    )


@dataclass(frozen=True)
class Backoff:
    """One restart's wait: its delay and the streak to remember for the next one."""

    #: how long to wait from the exit before starting again.
    delay_ns: int
    #: restarts in a row without a run of reset_after (this one included): the next exit's
    #: next_backoff takes it.
    streak: int

    def due_ns(self, exited_ns: int) -> int:
        """When the restart is due (Record.next_restart_ns)."""
        return exited_ns + self.delay_ns


def delay_for(streak: int, params: BackoffParams) -> int:
    """initial * multiplier**streak, capped at max (streak 0: the initial delay)."""
    delay = float(params.initial_ns)
    cap = float(params.max_ns)
    # A loop, not a power: a long streak would overflow a float power, and the cap is reached
    # after a few dozen steps anyway.
    for _ in range(max(0, streak)):
        if delay >= cap or params.multiplier == 1:
            break
        delay *= params.multiplier
    return int(min(delay, cap))


def next_backoff(
    streak: int, last_started_ns: int, exited_ns: int, params: BackoffParams
) -> Backoff:
    """The wait before restarting a container that ran from last_started_ns to exited_ns.

    streak: the Backoff.streak of its previous restart (0 if none).  A run of at least
    reset_after starts the streak again, so the delay is back to the initial one.
    """
    if last_started_ns and exited_ns - last_started_ns >= params.reset_after_ns:
        streak = 0
    streak = max(0, streak)
    return Backoff(delay_ns=delay_for(streak, params), streak=streak + 1)


# -- what `kctl ps` shows ---------------------------------------------------------------------


def human_duration(ns: int) -> str:
    """ "3 minutes", "1 hour", "less than a second" (kctl's wording for ago/Up)."""
    secs = max(0, ns) // _NS
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if secs >= length:
            count = secs // length
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return "less than a second"


def short_duration(ns: int) -> str:
    """ "4s", "2m30s", "1h5m": time left before a restart (rounded up: "in 0s" never shows)."""
    secs = -(-max(0, ns) // _NS)
    if secs < 60:
        return f"{secs}s"
    minutes, secs = divmod(secs, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


_HEALTH = {"starting": "health: starting", "healthy": "healthy", "unhealthy": "unhealthy"}
_REASONS = {"oom": "OOMKilled", "lost": "lost"}


def display_status(
    status: str,
    now_ns: int,
    *,
    exit_code: int = 0,
    started_ns: int = 0,
    finished_ns: int = 0,
    restart_count: int = 0,
    next_restart_ns: int = 0,
    health: str = "",
    last_exit_reason: str = "",
) -> str:
    """The STATUS column of `kctl ps`, in Docker's words.

    Up 3 minutes; Up 1 minute (healthy); Up 5 seconds (health: starting); Up 2 hours (Paused);
    Exited (1) 2 seconds ago; Exited (137) 1 minute ago (OOMKilled); Restarting (1) in 4s for
    the first wait; CrashLoopBackOff (1) in 2m30s, 4 restarts once it has been restarted
    before and failed again; Created.
    """
    if status in ("running", "paused"):
        text = "Up " + human_duration(now_ns - started_ns)
        if health in _HEALTH:
            text += f" ({_HEALTH[health]})"
        if status == "paused":
            text += " (Paused)"
        return text
    reason = _REASONS.get(last_exit_reason)
    suffix = f" ({reason})" if reason else ""
    if status == "exited":
        return f"Exited ({exit_code}) {_ago(now_ns, finished_ns)}{suffix}"
    if status == "restarting":
        when = ""
        if next_restart_ns > now_ns:
            when = " in " + short_duration(next_restart_ns - now_ns)
        if restart_count < 1:
            return f"Restarting ({exit_code}){when}{suffix}"
        plural = "s" if restart_count > 1 else ""
        return f"CrashLoopBackOff ({exit_code}){when}, {restart_count} restart{plural}{suffix}"
    return status.capitalize()


def _ago(now_ns: int, then_ns: int) -> str:
    if not then_ns:
        return ""
    return human_duration(now_ns - then_ns) + " ago"
