"""kettled's supervision under load: --containers containers crash-looping at once.

    sudo .venv/bin/python bench/supervise.py [--containers 100] [--duration 180]
                                             [--ps-runs 20] [--podman-containers 20]
                                             [--skip-podman] [--json FILE]

Every container runs `sh -c 'sleep 0.5; exit 1'` with `--restart always --restart-delay 1s
--restart-max-delay 10s` (made through the kettle.v1 API exactly as `kctl create` makes it),
all started at once, for --duration seconds.  What is reported:

1. kettled's CPU (utime+stime of /proc/PID/stat, and separately its reaped children's: the
   `shim start` processes), RSS and PSS (/proc/PID/smaps_rollup), threads and open fds, every
   5 s: before the storm with as many idle (sleeping) containers, then over the storm.  First
   minute against last minute, the CPU per restart in each, and the slope per minute of a
   least-squares line through the samples after the first minute: flat means no growth.
2. The same for the shared shims (the processes naming kettled's shim namespace, as
   tests/daemon/conftest.py's Kettled.shims() finds them; their reaped children are the
   containers' own processes), and the whole-life CPU of the shims that exited within each
   interval (an empty shim exits; this benchmark's reaping parent reaps it).
3. Restart punctuality, from kettled's own data: the events stream (Events rpc) tells of each
   exit (`die`), the restart it schedules (`backoff`, attributes delay and restartCount) and the
   restart (`restart`, restartCount + 1).  Scheduled time = the backoff event's time + its delay
   (kettled computes delay = due - now just before it publishes, so this is at most a store
   write later than the real due time: lateness is, if anything, understated by that much);
   one backoff in every few is also checked against the record's next_restart_ns
   (InspectContainer), and the difference is reported.  Lateness = restart event time -
   scheduled time; it includes the start itself (shim, runtime), so the time a StartContainer
   rpc takes on the idle kettled is shown next to it.
4. `kctl ps -a`, --ps-runs runs spread over the storm, against the same with the idle
   containers before it.
5. Optionally podman 4 (`podman run -d --restart always`, the same command, --podman-containers
   containers, the same duration): conmon and `podman container cleanup` restart containers
   there, with no back-off.  Its CPU is its cgroup parent's cpuacct (conmon, the cleanup
   processes and the runtime run there), against kettle's kettled + shims with their children;
   compared per restart, as the two restart at different rates.

Everything is private and torn down at the end, also on failure or Ctrl-C (bench/daemon.py's
helpers: a kettled with its own root, state, socket and shim namespace; a registry on
127.0.0.1 with a locally built busybox image; podman with its own storage and cgroup parent;
one temporary directory; a reaping parent process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.daemon import (  # noqa: E402
    BIN,
    CGROUP_ROOT,
    Interrupt,
    Kettle,
    PodmanSide,
    build_image,
    check,
    cmdline,
    fmt,
    p90,
    progress,
    reproduce,
    run_private,
    table,
    under_reaper,
)
from bench.shim import rollup  # noqa: E402

from kettle.api import kettle_pb as pb  # noqa: E402
from kettle.cli.client import Client  # noqa: E402

CRASH = ("sh", "-c", "sleep 0.5; exit 1")
SLEEP = ("sleep", "100000")
RESTART_FLAGS = ("--restart", "always", "--restart-delay", "1s", "--restart-max-delay", "10s")
SAMPLE_S = 5.0
IDLE_S = 30.0
SETTLE_S = 2.0
STARTERS = 8  # concurrent StartContainer rpcs when the storm begins: "at once"
LABEL = "kettle-bench=supervise"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024.0


# -- /proc ----------------------------------------------------------------------------------------


def _rollup_or_none(pid: int) -> dict[str, int] | None:
    """smaps_rollup of a shim, None when it exited between listing and reading."""
    try:
        return rollup(pid)
    except (ProcessLookupError, FileNotFoundError):
        return None


@dataclass(frozen=True)
class Stat:
    """CPU ticks of a process: its own, and its reaped children's; starttime tells pid reuse."""

    own: int
    children: int
    start: int


def proc_stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    f = text[text.rindex(")") + 2 :].split()  # f[0] is field 3 (state)
    return Stat(int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19]))


def threads_of(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def fds_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def machine_ticks() -> int:
    """Busy ticks of all CPUs (user, nice, system, irq, softirq, steal)."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return user + nice + system + irq + softirq + steal


def is_shim_daemon(pid: int) -> bool:
    """A long-lived shim, not a `shim start` or `shim delete` (kettled's children: theirs is
    in kettled's children CPU)."""
    argv = cmdline(pid).split()
    return bool(argv) and argv[-1] not in ("start", "delete")


class ProcGroup:
    """CPU of a changing set of processes: every process seen at both ends of an interval
    counts its growth; one first seen counts all it has (it began within the interval)."""

    def __init__(self) -> None:
        self.last: dict[int, Stat] = {}
        self.gone = 0

    def delta(self, pids: Iterable[int], first: bool) -> tuple[int, int, int]:
        """(own ticks, children ticks, processes) since the previous call."""
        now: dict[int, Stat] = {}
        own = children = 0
        for pid in pids:
            st = proc_stat(pid)
            if st is None:
                continue
            now[pid] = st
            prev = self.last.get(pid)
            if prev is not None and prev.start == st.start:
                own += st.own - prev.own
                children += st.children - prev.children
            elif not first:
                own += st.own
                children += st.children
        self.gone += len(set(self.last) - set(now))
        self.last = now
        return own, children, len(now)


# -- sampling -------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the phase began
    dt: float
    kettled_cpu: float  # % of one core
    kettled_children_cpu: float
    kettled_rss: float  # MiB
    kettled_pss: float
    kettled_threads: int
    kettled_fds: int
    shims: int
    shims_cpu: float
    shims_children_cpu: float
    #: shims that exited within the interval, all their life (reaped by the benchmark's reaper)
    shims_exited_cpu: float
    shims_rss: float
    shims_pss: float
    machine_cpu: float  # % of one core, whole machine (other users included)
    restarts: int  # restart events in the interval


class Sampler(threading.Thread):
    """Every SAMPLE_S seconds: kettled and its shims, while the phase's main loop runs."""

    def __init__(self, kettle: Kettle, restarts: Callable[[], int]) -> None:
        super().__init__(name="sampler", daemon=True)
        self.kettle = kettle
        self.pid = kettle.daemon_pid()
        self.restarts = restarts
        self.samples: list[Sample] = []
        self.stop_ev = threading.Event()
        self.error: BaseException | None = None
        self.t0 = time.monotonic()
        self.d = ProcGroup()
        self.s = ProcGroup()
        #: bench/daemon.py's reaping parent: the shims that exit are reaped there, so its
        #: children's CPU grows by all they (and their own reaped children) used.
        self.reaper = os.getppid()
        self._baseline()

    def _baseline(self) -> None:
        self.prev_t = time.monotonic()
        self.prev_machine = machine_ticks()
        self.prev_restarts = self.restarts()
        self.d.delta([self.pid], first=True)
        self.prev_orphans = self._orphans()
        self.s.delta(self._shims(), first=True)

    def _orphans(self) -> int:
        st = proc_stat(self.reaper)
        return st.children if st is not None else 0

    def _shims(self) -> list[int]:
        return [p for p in self.kettle.shims() if is_shim_daemon(p)]

    def take(self) -> None:
        now = time.monotonic()
        dt = now - self.prev_t
        pct = 100.0 / (CLK_TCK * dt)
        d_own, d_children, _ = self.d.delta([self.pid], first=False)
        shims = self._shims()
        s_own, s_children, n = self.s.delta(shims, first=False)
        m = machine_ticks()
        r = self.restarts()
        orphans = self._orphans()
        droll = rollup(self.pid)
        srolls = [x for x in (_rollup_or_none(p) for p in shims) if x is not None]
        self.samples.append(
            Sample(
                t=round(now - self.t0, 3),
                dt=round(dt, 3),
                kettled_cpu=d_own * pct,
                kettled_children_cpu=d_children * pct,
                kettled_rss=droll.get("Rss", 0) / MIB,
                kettled_pss=droll.get("Pss", 0) / MIB,
                kettled_threads=threads_of(self.pid),
                kettled_fds=fds_of(self.pid),
                shims=n,
                shims_cpu=s_own * pct,
                shims_children_cpu=s_children * pct,
                shims_exited_cpu=(orphans - self.prev_orphans) * pct,
                shims_rss=sum(x.get("Rss", 0) for x in srolls) / MIB,
                shims_pss=sum(x.get("Pss", 0) for x in srolls) / MIB,
                machine_cpu=(m - self.prev_machine) * pct,
                restarts=r - self.prev_restarts,
            )
        )
        self.prev_t, self.prev_machine, self.prev_restarts = now, m, r
        self.prev_orphans = orphans

    def run(self) -> None:
        try:
            k = 1
            while not self.stop_ev.wait(max(0.0, self.t0 + k * SAMPLE_S - time.monotonic())):
                self.take()
                k += 1
        except BaseException as e:  # reported by stop(): a dead sampler must not go unnoticed
            self.error = e

    def stop(self) -> list[Sample]:
        self.stop_ev.set()
        self.join(10)
        if self.error is not None:
            raise RuntimeError(f"sampler failed: {self.error!r}") from self.error
        return self.samples


# -- kettled's events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ev:
    t: int
    action: str
    id: str
    attrs: dict[str, str]


class Events(threading.Thread):
    """Container events of kettled's Events rpc, kept in memory; every `inspect_every`-th
    backoff is also looked up (InspectContainer) for the record's next_restart_ns."""

    def __init__(self, client: Client, inspect_every: int) -> None:
        super().__init__(name="events", daemon=True)
        self.client = client
        self.events: list[Ev] = []
        self.restarts = 0
        self.inspect_every = inspect_every
        self.backoffs = 0
        #: (cid, restartCount of the backoff) -> next_restart_ns from the record
        self.exact: dict[tuple[str, int], int] = {}
        self.inspect_missed = 0
        self._inspect_q: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._inspector = threading.Thread(target=self._inspect, name="inspect", daemon=True)
        req = pb.EventsRequest(filters=["type=container"])
        # The call object itself (not Client.stream) so that stop() can cancel it.
        self._call: Any = client._method("Events")(req)
        self.error: BaseException | None = None
        self.cancelled = False

    def run(self) -> None:
        self._inspector.start()
        try:
            for msg in self._call:
                ev = Ev(msg.time_ns, msg.action, msg.id, dict(msg.attributes))
                self.events.append(ev)
                if ev.action == "restart":
                    self.restarts += 1
                elif ev.action == "backoff":
                    self.backoffs += 1
                    if self.backoffs % self.inspect_every == 0:
                        self._inspect_q.put((ev.id, int(ev.attrs.get("restartCount", "-1"))))
        except BaseException as e:
            if not self.cancelled:
                self.error = e
        finally:
            self._inspect_q.put(None)

    def _inspect(self) -> None:
        while (item := self._inspect_q.get()) is not None:
            cid, n = item
            try:
                c = self.client.call("InspectContainer", pb.ContainerRequest(id=cid), pb.Container)
            except Exception:
                self.inspect_missed += 1  # removed meanwhile (the end of the storm)
                continue
            if c.status == "restarting" and c.restart_count == n and c.next_restart_ns:
                self.exact[(cid, n)] = c.next_restart_ns
            else:
                self.inspect_missed += 1  # restarted before we looked

    def stop(self) -> None:
        self.cancelled = True
        self._call.cancel()
        self.join(10)
        self._inspector.join(10)
        if self.error is not None:
            raise RuntimeError(f"events stream failed: {self.error!r}") from self.error


# -- statistics -----------------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def dist(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"n": 0, "median": None, "p90": None, "p99": None, "max": None}
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "p90": p90(xs),
        "p99": pct(xs, 0.99),
        "max": max(xs),
    }


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    ts = [t for t, _ in points]
    mt = statistics.fmean(ts)
    var = sum((t - mt) ** 2 for t in ts)
    if not var:
        return None
    mv = statistics.fmean(v for _, v in points)
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def window(samples: list[Sample], lo: float, hi: float) -> list[Sample]:
    """Samples whose interval ends within (lo, hi]."""
    return [s for s in samples if lo < s.t <= hi]


def cpu_ms(s: Sample, keys: tuple[str, ...]) -> float:
    return sum(float(getattr(s, k)) for k in keys) * s.dt * 10.0  # % of a core * s -> ms


CPU_KEYS = (
    "kettled_cpu",
    "kettled_children_cpu",
    "shims_cpu",
    "shims_children_cpu",
    "shims_exited_cpu",
)


def window_span(duration: float) -> float:
    """The "first" and "last" windows: a minute, or a third of a storm shorter than 2 min."""
    return 60.0 if duration >= 120 else duration / 3


def summarize_samples(samples: list[Sample], duration: float) -> dict[str, Any]:
    """First minute, last minute, slope after the first minute, for each figure."""
    span = window_span(duration)
    first = window(samples, 0, span)
    last = window(samples, duration - span, duration + SAMPLE_S)
    steady = window(samples, span, duration + SAMPLE_S)
    out: dict[str, Any] = {"window_s": span}
    for key in Sample.__dataclass_fields__:
        if key in ("t", "dt"):
            continue
        out[key] = {
            "first": statistics.fmean(float(getattr(s, key)) for s in first) if first else None,
            "last": statistics.fmean(float(getattr(s, key)) for s in last) if last else None,
            "slope_per_min": slope_per_min([(s.t, float(getattr(s, key))) for s in steady]),
        }

    def per_restart(ws: list[Sample], keys: tuple[str, ...]) -> float | None:
        n = sum(s.restarts for s in ws)
        return sum(cpu_ms(s, keys) for s in ws) / n if n else None

    for name, keys in (("kettled", CPU_KEYS[:2]), ("all", CPU_KEYS)):
        out[f"cpu_ms_per_restart_{name}"] = {
            "first": per_restart(first, keys),
            "last": per_restart(last, keys),
            "whole": per_restart(samples, keys),
            "slope_per_min": None,
        }
    return out


@dataclass
class Punctuality:
    lateness_ms: list[float] = field(default_factory=list)
    lateness_first_ms: list[float] = field(default_factory=list)  # the storm's first window
    lateness_last_ms: list[float] = field(default_factory=list)  # and its last
    decision_ms: list[float] = field(default_factory=list)  # die -> backoff
    due_error_ms: list[float] = field(default_factory=list)  # event estimate - next_restart_ns
    restarts: int = 0
    exact: int = 0  # lateness against the record's next_restart_ns
    missed: list[str] = field(default_factory=list)  # due long ago, never restarted
    gaps: int = 0  # restartCount jumps: events lost
    dies: int = 0
    backoffs: int = 0


def punctuality(
    events: list[Ev],
    exact: dict[tuple[str, int], int],
    ids: set[str],
    start_ns: int,
    end_ns: int,
    span_s: float,
) -> Punctuality:
    p = Punctuality()
    backoff: dict[tuple[str, int], tuple[int, int]] = {}  # -> (event time, due)
    last_die: dict[str, int] = {}
    seen_count: dict[str, int] = {}
    restarted: set[tuple[str, int]] = set()
    first_end = start_ns + round(span_s * 1e9)
    last_begin = end_ns - round(span_s * 1e9)
    for ev in events:
        if ev.id not in ids:
            continue
        if ev.action == "die":
            p.dies += 1
            last_die[ev.id] = ev.t
        elif ev.action == "backoff":
            p.backoffs += 1
            n = int(ev.attrs["restartCount"])
            delay = ev.attrs["delay"]
            if not delay.endswith("s"):
                raise RuntimeError(f"backoff event of {ev.id}: delay {delay!r} is not in seconds")
            backoff[(ev.id, n)] = (ev.t, ev.t + round(float(delay[:-1]) * 1e9))
            if ev.id in last_die:
                p.decision_ms.append((ev.t - last_die[ev.id]) / 1e6)
        elif ev.action == "restart":
            n = int(ev.attrs["restartCount"])
            if n != seen_count.get(ev.id, 0) + 1:
                p.gaps += 1
            seen_count[ev.id] = n
            key = (ev.id, n - 1)
            if key not in backoff:
                continue  # its backoff event was lost: counted in gaps
            p.restarts += 1
            restarted.add(key)
            _t_b, due = backoff[key]
            if key in exact:
                p.exact += 1
                p.due_error_ms.append((due - exact[key]) / 1e6)
                due = exact[key]
            late = (ev.t - due) / 1e6
            p.lateness_ms.append(late)
            if ev.t <= first_end:
                p.lateness_first_ms.append(late)
            if ev.t >= last_begin:
                p.lateness_last_ms.append(late)
    # A restart due more than 5 s before the end that never came is a missed restart.
    for key, (_t, due) in backoff.items():
        if key not in restarted and due < end_ns - 5_000_000_000:
            p.missed.append(
                f"{key[0][:12]} restart {key[1] + 1} due {(end_ns - due) / 1e9:.1f}s ago"
            )
    return p


# -- phases ---------------------------------------------------------------------------------------


def crash_request(
    ref: str, name: str, command: tuple[str, ...], restart: bool
) -> pb.CreateContainerRequest:
    """The request `kctl create` sends for these flags (kctl's own flag parser)."""
    from kettle.cli import runflags
    from kettle.cli.commands import create

    p = argparse.ArgumentParser()
    create.configure(p)
    flags = [*(RESTART_FLAGS if restart else ()), "--name", name, "--label", LABEL]
    return runflags.request(p.parse_args([*flags, ref, *command]), auto_remove=False)


def create_all(
    client: Client, ref: str, n: int, tag: str, command: tuple[str, ...], restart: bool
) -> list[str]:
    ids = []
    for i in range(n):
        Interrupt.checkpoint()
        req = crash_request(ref, f"{tag}-{i:03d}", command, restart)
        ids.append(client.call("CreateContainer", req, pb.Container).id)
    return ids


def start_all(client: Client, ids: list[str], workers: int) -> list[float]:
    """StartContainer for each id, `workers` at a time; each rpc's ms."""

    def one(cid: str) -> float:
        t0 = time.perf_counter()
        client.call("StartContainer", pb.ContainerRequest(id=cid), pb.Container)
        return (time.perf_counter() - t0) * 1000

    Interrupt.checkpoint()
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, ids))


def sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        Interrupt.checkpoint()
        time.sleep(min(left, 0.2))


def timed_ps(kettle: Kettle, n: int) -> float:
    t0 = time.perf_counter()
    res = check(kettle.kctl("ps", "-a"), "kctl ps -a")
    ms = (time.perf_counter() - t0) * 1000
    rows = len(res.stdout.splitlines()) - 1
    if rows < n:
        raise RuntimeError(f"kctl ps -a listed {rows} containers, not {n}:\n{res.stdout}")
    return ms


def ps_spread(kettle: Kettle, n: int, runs: int, t0: float, span: float) -> list[float]:
    """`kctl ps -a` `runs` times, evenly over [t0, t0 + span]; returns at t0 + span."""
    out = []
    for i in range(runs):
        sleep_until(t0 + (i + 0.5) * span / runs)
        out.append(timed_ps(kettle, n))
    sleep_until(t0 + span)
    return out


def remove_all(kettle: Kettle, ids: list[str]) -> float:
    t0 = time.perf_counter()
    check(kettle.kctl("rm", "-f", *ids, timeout=600), "kctl rm -f")
    return time.perf_counter() - t0


def idle_phase(
    kettle: Kettle, client: Client, ref: str, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    n = args.containers
    progress(f"idle: {n} sleeping containers, {IDLE_S:.0f} s")
    ids = create_all(client, ref, n, f"{tag}-idle", SLEEP, restart=False)
    start_ms = start_all(client, ids, 1)  # one at a time: the reference time of one start
    time.sleep(SETTLE_S)
    timed_ps(kettle, n)  # warm-up: page cache, pyc files
    sampler = Sampler(kettle, lambda: 0)
    sampler.start()
    try:
        ps = ps_spread(kettle, n, args.ps_runs, time.monotonic(), IDLE_S)
    finally:
        samples = sampler.stop()
    remove_s = remove_all(kettle, ids)
    return {
        "start_rpc_ms": start_ms,
        "ps_ms": ps,
        "samples": [asdict(s) for s in samples],
        "remove_s": remove_s,
    }


def storm_phase(
    kettle: Kettle, client: Client, ref: str, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    n, duration = args.containers, float(args.duration)
    ids: list[str] = []
    inspect_every = max(1, n // 10)  # about one inspect a second at the back-off's cap
    events = Events(client, inspect_every)
    events.start()
    sampler: Sampler | None = None
    try:
        progress(f"storm: creating {n} crash-looping containers")
        ids += create_all(client, ref, n, f"{tag}-crash", CRASH, restart=True)
        time.sleep(SETTLE_S)
        sampler = Sampler(kettle, lambda: events.restarts)
        sampler.start()
        t0 = time.monotonic()
        t0_ns = time.time_ns()
        progress(f"storm: {n} containers, {duration:.0f} s")
        start_ms = start_all(client, ids, STARTERS)
        ps = ps_spread(kettle, n, args.ps_runs, t0, duration)
        end_ns = time.time_ns()
        samples = sampler.stop()
        shims_gone = sampler.s.gone
        sampler = None
        listed = client.call(
            "ListContainers",
            pb.ListContainersRequest(all=True, filters=[f"label={LABEL}"]),
            pb.ListContainersResponse,
        ).containers
        time.sleep(0.5)  # the last events of the window reach us
    finally:
        if sampler is not None:
            sampler.stop_ev.set()
        events.stop()
    progress(f"storm: removing {n} containers")
    remove_s = remove_all(kettle, ids)
    p = punctuality(events.events, events.exact, set(ids), t0_ns, end_ns, window_span(duration))
    return {
        "start_rpc_ms": start_ms,
        "ps_ms": ps,
        "samples": [asdict(s) for s in samples],
        "summary": summarize_samples(samples, duration),
        "restart_count_listed": sum(c.restart_count for c in listed),
        "statuses": sorted({c.status for c in listed}),
        "punctuality": asdict(p),
        "inspect_every": inspect_every,
        "inspect_missed": events.inspect_missed,
        "events": len(events.events),
        "shim_processes_gone": shims_gone,
        "remove_s": remove_s,
        "t0_ns": t0_ns,
        "end_ns": end_ns,
    }


# -- podman ---------------------------------------------------------------------------------------


def cpuacct_ns(parent: str) -> int | None:
    """CPU of a cgroup subtree: cgroup v1 cpuacct.usage, or cgroup2 cpu.stat usage_usec."""
    v1 = CGROUP_ROOT / "cpuacct" / parent / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text())
    v2 = CGROUP_ROOT / parent / "cpu.stat"
    if v2.exists():
        for line in v2.read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) * 1000
    return None


def podman_phase(
    work: Path, ref: str, args: argparse.Namespace, cleanups: list[Callable[[], list[str]]]
) -> dict[str, Any]:
    n, duration = args.podman_containers, float(args.duration)
    pod = PodmanSide(work / "podman")
    cleanups.append(pod.cleanup)
    pod.start()
    pod.pull(ref)
    progress(f"podman: {n} crash-looping containers, {duration:.0f} s")
    parent = pod.p.cgroup_parent
    ids: list[str] = []
    base = cpuacct_ns(parent) or 0
    t0 = time.monotonic()
    for _ in range(n):
        res = pod.podman("run", "-d", *pod.p.run_args(), *RESTART_FLAGS[:2], ref, *CRASH)
        ids.append(check(res, "podman run -d --restart always").stdout.strip())
    # conmon (and so `podman container cleanup`, which it runs) must be in the cgroup parent
    # for cpuacct to see podman's side; else this comparison would flatter podman.
    conmons = pod.shims()
    inside = set(pod.cgroup_pids())
    if cpuacct_ns(parent) is None or (conmons and not set(conmons) & inside):
        return {"skipped": f"conmon is not under the cgroup parent {parent}: no cpuacct for it"}
    samples: list[dict[str, float]] = []
    k = 1
    prev_ns, prev_t = base, t0
    while time.monotonic() < t0 + duration:
        sleep_until(min(t0 + k * SAMPLE_S, t0 + duration))
        now = time.monotonic()
        cur = cpuacct_ns(parent) or prev_ns
        rolls = [rollup(p) for p in pod.shims()]
        samples.append(
            {
                "t": round(now - t0, 3),
                "cpu": (cur - prev_ns) / 1e7 / (now - prev_t),
                "conmons": float(len(rolls)),
                "conmon_rss": sum(r.get("Rss", 0) for r in rolls) / MIB,
            }
        )
        prev_ns, prev_t = cur, now
        k += 1
    total_ns = (cpuacct_ns(parent) or prev_ns) - base
    wall = time.monotonic() - t0
    res = pod.podman("inspect", "--format", "{{.RestartCount}}", *ids)
    counts = [int(x) for x in check(res, "podman inspect").stdout.split()]
    progress("podman: removing")
    t_rm = time.perf_counter()
    pod.remove_all()
    return {
        "containers": n,
        "wall_s": wall,
        "cpu_ms": total_ns / 1e6,
        "cpu_pct": total_ns / 1e7 / wall,
        "restarts": sum(counts),
        "samples": samples,
        "remove_s": time.perf_counter() - t_rm,
    }


# -- output ---------------------------------------------------------------------------------------


def ms(x: float | None) -> str:
    return fmt(x, 1)


def print_results(r: dict[str, Any]) -> None:
    a = r["args"]
    n, duration = a["containers"], a["duration"]
    idle, storm = r["idle"], r["storm"]
    sm = storm["summary"]
    span = sm["window_s"]
    isamples = [Sample(**s) for s in idle["samples"]]
    p = storm["punctuality"]
    restarts = p["restarts"]

    print(f"\n## kettled supervising {n} crash-looping containers for {duration:.0f} s\n")
    print(
        f"`sh -c 'sleep 0.5; exit 1'`, `{' '.join(RESTART_FLAGS)}`, all started at once "
        f"({STARTERS} StartContainer rpcs at a time). Machine: {os.cpu_count()} CPUs, load "
        f"average {r['loadavg']} at the start. Restarts: {restarts} seen in events "
        f"({restarts / duration:.1f}/s; kettled's records count {storm['restart_count_listed']}), "
        f"{p['dies']} exits, {p['backoffs']} back-offs scheduled; missed restarts: "
        f"{len(p['missed'])}; restartCount gaps (lost events): {p['gaps']}; "
        f"statuses at the end: {', '.join(storm['statuses'])}."
    )

    def idle_mean(key: str) -> float | None:
        return statistics.fmean(float(getattr(s, key)) for s in isamples) if isamples else None

    rows_spec = [
        ("kettled CPU, % of one core", "kettled_cpu", 1),
        ("kettled's children CPU (`shim start`), %", "kettled_children_cpu", 1),
        ("kettled RSS, MiB", "kettled_rss", 1),
        ("kettled PSS, MiB", "kettled_pss", 1),
        ("kettled threads", "kettled_threads", 1),
        ("kettled open fds", "kettled_fds", 1),
        ("shim processes", "shims", 1),
        ("shims CPU, %", "shims_cpu", 1),
        ("shims' children CPU (containers), %", "shims_children_cpu", 1),
        ("shims that exited meanwhile, CPU %", "shims_exited_cpu", 1),
        ("shims RSS, MiB", "shims_rss", 1),
        ("shims PSS, MiB", "shims_pss", 1),
        ("restarts per sample (5 s)", "restarts", 1),
        ("whole machine CPU, % of one core", "machine_cpu", 1),
    ]
    rows = []
    for label, key, digits in rows_spec:
        f = sm[key]
        rows.append(
            [
                label,
                fmt(idle_mean(key), digits),
                fmt(f["first"], digits),
                fmt(f["last"], digits),
                fmt(f["slope_per_min"], 2),
            ]
        )
    for label, key in (
        ("kettled CPU ms per restart (own + children)", "cpu_ms_per_restart_kettled"),
        ("kettled + shims CPU ms per restart", "cpu_ms_per_restart_all"),
    ):
        f = sm[key]
        rows.append([label, "-", fmt(f["first"], 1), fmt(f["last"], 1), "-"])
    first_lbl = f"storm, first {span:.0f} s"
    last_lbl = f"storm, last {span:.0f} s"
    print(
        f"\nkettled and its shims, sampled every {SAMPLE_S:.0f} s (means of the samples; the "
        f"slope is a least-squares line through the samples after the first {span:.0f} s, per "
        "minute: flat is about 0):\n"
    )
    table(["", f"{n} idle containers ({IDLE_S:.0f} s)", first_lbl, last_lbl, "slope / min"], rows)

    print("\nTimeline of the storm (each 5 s sample):\n")
    table(
        [
            "t s",
            "restarts",
            "kettled CPU %",
            "children %",
            "RSS MiB",
            "PSS MiB",
            "fds",
            "shims CPU %",
            "exited shims %",
            "shims RSS MiB",
            "machine %",
        ],
        [
            [
                f"{s['t']:.0f}",
                str(s["restarts"]),
                ms(s["kettled_cpu"]),
                ms(s["kettled_children_cpu"]),
                ms(s["kettled_rss"]),
                ms(s["kettled_pss"]),
                str(s["kettled_fds"]),
                ms(s["shims_cpu"]),
                ms(s["shims_exited_cpu"]),
                ms(s["shims_rss"]),
                ms(s["machine_cpu"]),
            ]
            for s in storm["samples"]
        ],
    )

    def drow(label: str, xs: list[float]) -> list[str]:
        d = dist(xs)
        return [label, str(d["n"]), ms(d["median"]), ms(d["p90"]), ms(d["p99"]), ms(d["max"])]

    print(
        "\nRestart punctuality, ms. Lateness = kettled's `restart` event - the scheduled time "
        f"(the `backoff` event's time + its delay; kettled's next_restart_ns for the {p['exact']} "
        f"restarts whose record was inspected while waiting, one back-off in "
        f"{storm['inspect_every']}). A restart event is published once the container runs again, "
        "so lateness includes the start itself: the StartContainer rpc rows are that cost.\n"
    )
    table(
        ["", "n", "median", "p90", "p99", "max"],
        [
            drow("lateness, whole storm", p["lateness_ms"]),
            drow(f"lateness, first {span:.0f} s", p["lateness_first_ms"]),
            drow(f"lateness, last {span:.0f} s", p["lateness_last_ms"]),
            drow("die -> backoff event (kettled's decision)", p["decision_ms"]),
            drow("StartContainer rpc, idle kettled, one at a time", idle["start_rpc_ms"]),
            drow(
                f"StartContainer rpc, storm's first starts, {STARTERS} at a time",
                storm["start_rpc_ms"],
            ),
            drow("scheduled time from the event - next_restart_ns", p["due_error_ms"]),
        ],
    )
    if p["missed"]:
        print("\nMissed restarts:", *p["missed"][:20], sep="\n  ")

    print(f"\n`kctl ps -a` listing {n} containers, ms (each a new kctl process):\n")
    ips, sps = idle["ps_ms"], storm["ps_ms"]
    table(
        ["", "runs", "median", "p90", "max"],
        [
            [
                "idle (sleeping) containers",
                str(len(ips)),
                ms(statistics.median(ips)),
                ms(p90(ips)),
                ms(max(ips)),
            ],
            [
                "during the storm",
                str(len(sps)),
                ms(statistics.median(sps)),
                ms(p90(sps)),
                ms(max(sps)),
            ],
        ],
    )
    print(f"\nstorm / idle, median: {statistics.median(sps) / statistics.median(ips):.2f}x")
    print(
        f"\n`kctl rm -f` of all {n}: {idle['remove_s']:.1f} s idle, {storm['remove_s']:.1f} s "
        "crash-looping."
    )

    pod = r["podman"]
    if "skipped" in pod:
        print(f"\npodman: skipped: {pod['skipped']}")
        return
    ssamples = [Sample(**s) for s in storm["samples"]]
    k_ms = sum(cpu_ms(s, CPU_KEYS) for s in ssamples)
    k_wall = sum(s.dt for s in ssamples)
    k_restarts = sum(s.restarts for s in ssamples)
    pr = pod["restarts"]
    print(
        f"\nAgainst podman 4 (`podman run -d --restart always`, conmon and `podman container "
        f"cleanup`: no back-off), {pod['containers']} containers for {pod['wall_s']:.0f} s. "
        "Engine CPU: kettle = kettled + its shims (running or exited) with their reaped "
        "children (`shim start`, the containers); podman = its cgroup parent's cpuacct "
        "(conmon, cleanup, runc, the containers):\n"
    )
    k_per = k_ms / k_restarts if k_restarts else None
    p_per = pod["cpu_ms"] / pr if pr else None
    table(
        [
            "",
            f"kettle, {n} containers",
            f"podman, {pod['containers']} containers",
            "kettle / podman",
        ],
        [
            ["restarts", str(k_restarts), str(pr), "-"],
            ["restarts per second", fmt(k_restarts / k_wall, 1), fmt(pr / pod["wall_s"], 1), "-"],
            ["engine CPU, % of one core", fmt(k_ms / k_wall / 10, 1), fmt(pod["cpu_pct"], 1), "-"],
            [
                "engine CPU ms per restart",
                fmt(k_per, 1),
                fmt(p_per, 1),
                "-" if k_per is None or not p_per else f"{k_per / p_per:.2f}x",
            ],
            ["`rm -f` of all, s", fmt(storm["remove_s"], 1), fmt(pod["remove_s"], 1), "-"],
        ],
    )


# -- the run ---------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, work: Path, cleanups: list[Callable[[], list[str]]]) -> None:
    reg, ref = build_image(work)

    def stop_registry() -> list[str]:
        reg.kill()
        return []

    cleanups.append(stop_registry)
    kettle = Kettle(work / "kettled", reg.host)
    cleanups.append(kettle.cleanup)
    if args.json:

        def keep_log() -> list[str]:
            # kettled's own account of the storm, for a look at whatever the figures show
            with contextlib.suppress(OSError):
                shutil.copyfile(kettle.log, args.json + ".kettled.log")
            return []

        cleanups.append(keep_log)
    kettle.start()
    kettle.pull(ref)
    client = Client(kettle.address)

    def close_client() -> list[str]:
        client.close()
        return []

    cleanups.append(close_client)
    tag = f"sv{uuid.uuid4().hex[:8]}"
    r: dict[str, Any] = {
        "command": reproduce(),
        "args": {
            "containers": args.containers,
            "duration": args.duration,
            "ps_runs": args.ps_runs,
            "podman_containers": None if args.skip_podman else args.podman_containers,
        },
        "image": ref,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    r["idle"] = idle_phase(kettle, client, ref, args, tag)
    r["storm"] = storm_phase(kettle, client, ref, args, tag)
    if args.skip_podman:
        r["podman"] = {"skipped": args.skip_podman}
    else:
        try:
            r["podman"] = podman_phase(work, ref, args, cleanups)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            # kettle's figures, minutes in the making, are still worth printing
            traceback.print_exc()
            r["podman"] = {"skipped": f"podman failed: {e}"}
    print_results(r)
    print(f"\nreproduce: {r['command']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
        print(f"every sample: {args.json}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--containers", type=int, default=100, help="crash-looping containers")
    ap.add_argument("--duration", type=int, default=180, help="seconds of the storm")
    ap.add_argument(
        "--ps-runs", type=int, default=20, help="kctl ps -a runs, idle and in the storm"
    )
    ap.add_argument("--podman-containers", type=int, default=20)
    ap.add_argument(
        "--skip-podman",
        action="store_const",
        const="--skip-podman",
        default="",
        help="no podman comparison",
    )
    ap.add_argument("--json", metavar="FILE", help="also write every sample here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/supervise.py needs root", file=sys.stderr)
        return 2
    if min(args.containers, args.ps_runs, args.podman_containers) < 1 or args.duration < 15:
        print(
            "--containers, --ps-runs, --podman-containers >= 1; --duration >= 15", file=sys.stderr
        )
        return 2
    tools = ["/usr/bin/docker-registry", "skopeo", str(BIN / "kettled"), str(BIN / "kctl")]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    no_podman = [t for t in ("podman", "conmon") if shutil.which(t) is None]
    if no_podman and not args.skip_podman:
        args.skip_podman = f"{' and '.join(no_podman)} not installed"
    if args.json:
        args.json = os.path.abspath(args.json)
    return under_reaper(partial(run_private, bench, args, "kettle-bench-sv-"))


if __name__ == "__main__":
    sys.exit(main())
