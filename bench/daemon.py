"""kettled + kctl against containerd (ctr) and podman, side by side in one run.

    sudo .venv/bin/python bench/daemon.py [--runs 15] [--containers 50] [--ps-containers 100]
                                          [--ps-state running|created] [--skip-podman]
                                          [--json FILE]

What is measured, every figure next to the same figure of the peers and as a ratio to them:

1. `kctl run --rm IMAGE true` against `ctr run --rm IMAGE ID true` and
   `podman run --rm IMAGE true`: median and p90 of --runs runs after one warm-up run.
2. --containers detached containers started one at a time (`kctl run -d IMAGE sleep 1000`,
   `ctr run -d IMAGE ID sleep 1000`, `podman run -d IMAGE sleep 1000`), then removed one at a
   time (`kctl rm -f`, `ctr tasks rm -f` + `ctr containers rm`, `podman rm -f -t 0`).
3. Memory: kettled's RSS and PSS (/proc/PID/smaps_rollup) idle after the pull and with the
   --containers containers running, and the memory each running container costs: the
   daemon's growth plus every shim process (kettle's pooled shim, containerd's runc shims;
   podman has no daemon: its conmon processes).
4. `kctl ps -a` with --ps-containers containers against `ctr containers ls`, `ctr tasks ls`
   and `podman ps -a` (10 runs each after one warm-up).

All three use the same image: a busybox image built locally from Debian's busybox-static
(tests/support/image.py), served by a private docker-registry on 127.0.0.1 and pulled into
each before anything is timed.  Every command of every round runs in a rotating order, so that
noise on this small, shared machine falls on all three alike: compare figures of one run only.

Everything is private and torn down at the end, also on failure or Ctrl-C: a kettled with its
own root, state, socket and shim namespace; a containerd with its own root, state, socket and
namespace (tests/shim/ctd.py, as bench/shim.py uses it); podman with its own root, runroot,
tmpdir, containers.conf (cgroupfs, file events, runc: see machine-notes) and a cgroup parent of
its own (tests/support/podman.py); the registry; one temporary directory.  The benchmark runs
as a child of a small reaping parent, a child subreaper: daemonised shims and conmons whose
starter exits are reparented to it and reaped there (PID 1 here never reaps), so no reaping
thread disturbs the timed process and no Popen exit status is stolen.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shim import rollup, shim_pids  # noqa: E402

from tests.image.oci_fixture import Registry, free_port, write_registry_config  # noqa: E402
from tests.shim.ctd import Containerd, processes_with  # noqa: E402
from tests.support.image import build_oci_layout  # noqa: E402
from tests.support.kettled import (  # noqa: E402
    BIN,
    CGROUP_ROOT,
    Kettled,
    cmdline,
    unmount_under,
)
from tests.support.podman import Podman  # noqa: E402

RUNC = Path("/usr/sbin/runc")
#: runc's state directory when podman runs it as root (podman passes no --root)
RUNC_ROOT = Path("/run/runc")
PS_RUNS = 10
SETTLE_S = 2.0  # let daemons and shims settle (lazy imports, first GC) before memory is read
SLEEP = ("sleep", "1000")

Proc = subprocess.CompletedProcess[str]
T = TypeVar("T")


# -- small helpers -------------------------------------------------------------------------------


def memory_of(pids: list[int]) -> dict[str, float]:
    """Summed RSS and PSS of pids, MiB."""
    rolls = [rollup(p) for p in pids]
    return {
        "processes": float(len(pids)),
        "rss_mib": sum(r.get("Rss", 0) for r in rolls) / 1024,
        "pss_mib": sum(r.get("Pss", 0) for r in rolls) / 1024,
    }


def p90(xs: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def rotated(items: list[T], i: int) -> list[T]:
    """items, starting at the i-th: each round starts with the next engine."""
    k = i % len(items)
    return items[k:] + items[:k]


def check(res: Proc, what: str) -> Proc:
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res


class Interrupt:
    """Ctrl-C and SIGTERM, acted on between two commands.

    subprocess.run kills its command when interrupted; a `podman run -d` or `ctr run -d` killed
    half-way leaves a container that its engine no longer knows to remove.  So the first signal
    is noted and raised as KeyboardInterrupt when the next command is about to start; a second
    one stops at once; during the cleanup, signals are ignored.
    """

    received = False
    cleaning = False

    @classmethod
    def on_signal(cls, _signum: int, _frame: object) -> None:
        if cls.received:
            raise KeyboardInterrupt
        cls.received = True

    @classmethod
    def checkpoint(cls) -> None:
        if cls.received and not cls.cleaning:
            raise KeyboardInterrupt


def timed(fn: Callable[[], Proc], what: str) -> tuple[float, Proc]:
    t0 = time.perf_counter()
    res = fn()
    ms = (time.perf_counter() - t0) * 1000
    return ms, check(res, what)


# -- the three engines ----------------------------------------------------------------------------


class Kettle(Kettled):
    """tests/support/kettled.py's private kettled (namespace kb-..., log level info, as
    containerd's here), with what the rounds call."""

    name = "kettle"

    def __init__(self, base: Path, plain_http: str) -> None:
        super().__init__(base, plain_http, prefix="kb", log_level="info")

    def kctl(self, *args: str, timeout: float = 120) -> Proc:
        Interrupt.checkpoint()
        return super().kctl(*args, timeout=timeout)

    # what the rounds call
    def pull(self, ref: str) -> None:
        check(self.kctl("pull", ref, timeout=300), "kctl pull")

    def run_rm(self, ref: str) -> Proc:
        return self.kctl("run", "--rm", ref, "true")

    def run_detached(self, ref: str) -> tuple[Proc, str]:
        res = self.kctl("run", "-d", ref, *SLEEP)
        return res, res.stdout.strip()

    def create(self, ref: str, running: bool) -> None:
        if running:
            check(self.kctl("run", "-d", ref, *SLEEP), "kctl run -d")
        else:
            check(self.kctl("create", ref, *SLEEP), "kctl create")

    def remove(self, cid: str) -> Proc:
        return self.kctl("rm", "-f", cid)

    def remove_all(self) -> None:
        ids = check(self.kctl("ps", "-a", "-q", "--no-trunc"), "kctl ps -a -q").stdout.split()
        if ids:
            check(self.kctl("rm", "-f", *ids, timeout=600), "kctl rm -f")

    def ps(self) -> dict[str, Callable[[], Proc]]:
        return {"kctl ps -a": lambda: self.kctl("ps", "-a")}

    def daemon_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class QuietContainerd(Containerd):
    """tests/shim/ctd.py's containerd at log level info: kettled logs at info too."""

    def config_text(self) -> str:
        return super().config_text().replace('level = "debug"', 'level = "info"')


class Ctr:
    """A private containerd 1.6 with containerd's own runc shim, driven by ctr."""

    name = "ctr"

    def __init__(self) -> None:
        self.ctd = QuietContainerd()
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.ctd.start()
        self.env = self.ctd.env()

    def ctr(self, *args: str, timeout: float = 120) -> Proc:
        Interrupt.checkpoint()
        return subprocess.run(
            self.ctd.ctr_argv(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    @staticmethod
    def new_id() -> str:
        return f"kb{uuid.uuid4().hex[:12]}"

    def pull(self, ref: str) -> None:
        check(self.ctr("images", "pull", "--plain-http", ref, timeout=300), "ctr images pull")

    def run_rm(self, ref: str) -> Proc:
        return self.ctr("run", "--rm", ref, self.new_id(), "true")

    def run_detached(self, ref: str) -> tuple[Proc, str]:
        cid = self.new_id()
        return self.ctr("run", "-d", ref, cid, *SLEEP), cid

    def create(self, ref: str, running: bool) -> None:
        cid = self.new_id()
        if running:
            check(self.ctr("run", "-d", ref, cid, *SLEEP), "ctr run -d")
        else:
            check(self.ctr("containers", "create", ref, cid, *SLEEP), "ctr containers create")

    def remove(self, cid: str) -> Proc:
        # What `rm -f` is to kctl and podman: SIGKILL and delete the task, then the container.
        res = self.ctr("tasks", "rm", "-f", cid)
        if res.returncode != 0:
            return res
        return self.ctr("containers", "rm", cid)

    def remove_all(self) -> None:
        tasks = check(self.ctr("tasks", "ls", "-q"), "ctr tasks ls").stdout.split()
        if tasks:
            check(self.ctr("tasks", "rm", "-f", *tasks, timeout=600), "ctr tasks rm -f")
        ids = check(self.ctr("containers", "ls", "-q"), "ctr containers ls").stdout.split()
        if ids:
            check(self.ctr("containers", "rm", *ids, timeout=600), "ctr containers rm")

    def ps(self) -> dict[str, Callable[[], Proc]]:
        return {
            "ctr containers ls": lambda: self.ctr("containers", "ls"),
            "ctr tasks ls": lambda: self.ctr("tasks", "ls"),
        }

    def daemon_pid(self) -> int:
        assert self.ctd.proc is not None
        return self.ctd.proc.pid

    def shims(self) -> list[int]:
        return shim_pids(self.ctd, "containerd-shim-runc-v2")

    def cleanup(self) -> list[str]:
        return self.ctd.stop()


class PodmanSide:
    """podman with private storage and configuration (tests/support/podman.py), runc."""

    name = "podman"

    def __init__(self, base: Path) -> None:
        self.p = Podman(base, RUNC)
        self.base = base

    def start(self) -> None:
        self.p.setup()

    def podman(self, *args: str, timeout: float = 120) -> Proc:
        Interrupt.checkpoint()
        return self.p(*args, check=False, timeout=timeout)

    def pull(self, ref: str) -> None:
        check(self.podman("pull", "-q", "--tls-verify=false", ref, timeout=300), "podman pull")

    def run_rm(self, ref: str) -> Proc:
        return self.podman("run", "--rm", *self.p.run_args(), ref, "true")

    def run_detached(self, ref: str) -> tuple[Proc, str]:
        res = self.podman("run", "-d", *self.p.run_args(), ref, *SLEEP)
        return res, res.stdout.strip()

    def create(self, ref: str, running: bool) -> None:
        verb = ("run", "-d") if running else ("create",)
        check(self.podman(*verb, *self.p.run_args(), ref, *SLEEP), f"podman {verb[0]}")

    def remove(self, cid: str) -> Proc:
        # -t 0: sleep as pid 1 ignores SIGTERM; without it podman waits 10 s before SIGKILL.
        return self.podman("rm", "-f", "-t", "0", cid)

    def remove_all(self) -> None:
        check(self.podman("rm", "--all", "-f", "-t", "0", timeout=600), "podman rm --all")

    def ps(self) -> dict[str, Callable[[], Proc]]:
        return {"podman ps -a": lambda: self.podman("ps", "-a")}

    def shims(self) -> list[int]:
        return [p for p in processes_with("conmon") if str(self.base) in cmdline(p)]

    def cleanup(self) -> list[str]:
        problems = self.p.teardown()
        # What teardown reports but leaves: a conmon (and its container) whose podman died
        # before recording it, runc state of such a container, the cgroups they hold.
        killed = False
        for pid in self.shims() + self.cgroup_pids():
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if killed:
            time.sleep(0.5)
        for state in RUNC_ROOT.glob("*/state.json"):
            with contextlib.suppress(OSError):
                if str(self.base) in state.read_text():
                    problems.append(f"runc state {state.parent}: deleted")
                    subprocess.run(
                        [
                            str(RUNC),
                            "--root",
                            str(RUNC_ROOT),
                            "delete",
                            "--force",
                            state.parent.name,
                        ],
                        capture_output=True,
                        check=False,
                    )
        for top in self.cgroup_tops():
            for d in sorted((top, *top.rglob("*")), key=lambda p: -len(p.parts)):
                if d.is_dir():
                    with contextlib.suppress(OSError):
                        d.rmdir()
            if top.exists():
                problems.append(f"cgroup {top} not removable")
        return problems

    def cgroup_tops(self) -> list[Path]:
        name = self.p.cgroup_parent
        tops = [CGROUP_ROOT / name, *(h / name for h in CGROUP_ROOT.iterdir() if h.is_dir())]
        return [t for t in tops if t.is_dir()]

    def cgroup_pids(self) -> list[int]:
        pids: set[int] = set()
        for top in self.cgroup_tops():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(x) for x in procs.read_text().split())
        return sorted(pids)


Engine = Kettle | Ctr | PodmanSide


# -- the measurements ------------------------------------------------------------------------------


def bench_run_rm(engines: list[Engine], ref: str, runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {e.name: [] for e in engines}
    for i in range(runs + 1):  # round 0 is the warm-up: page cache, pyc files, first shim
        for e in rotated(engines, i):
            ms, _ = timed(partial(e.run_rm, ref), f"{e.name} run --rm")
            if i > 0:
                samples[e.name].append(ms)
    return samples


def start_detached(
    engines: list[Engine], ref: str, n: int
) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    ids: dict[str, list[str]] = {e.name: [] for e in engines}
    for i in range(n):
        for e in rotated(engines, i):
            t0 = time.perf_counter()
            res, cid = e.run_detached(ref)
            times[e.name].append((time.perf_counter() - t0) * 1000)
            check(res, f"{e.name} run -d")
            ids[e.name].append(cid)
    return times, ids


def remove_detached(engines: list[Engine], ids: dict[str, list[str]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    for i in range(len(ids[engines[0].name])):
        for e in rotated(engines, i):
            ms, _ = timed(partial(e.remove, ids[e.name][i]), f"{e.name} rm")
            times[e.name].append(ms)
    return times


def daemon_memory(engines: list[Engine]) -> dict[str, dict[str, float]]:
    return {e.name: memory_of([e.daemon_pid()]) for e in engines if isinstance(e, Kettle | Ctr)}


def wait_no_shims(engines: list[Engine]) -> None:
    """A pool shim lingering after the run --rm rounds would count as the next containers'."""
    deadline = time.monotonic() + 30
    while any(e.shims() for e in engines) and time.monotonic() < deadline:
        time.sleep(0.1)


def bench_memory(
    engines: list[Engine], ref: str, n: int, idle: dict[str, dict[str, float]]
) -> tuple[dict[str, Any], dict[str, list[float]], dict[str, list[str]]]:
    wait_no_shims(engines)
    time.sleep(SETTLE_S)
    before = daemon_memory(engines)
    start_times, ids = start_detached(engines, ref, n)
    time.sleep(SETTLE_S)
    loaded = daemon_memory(engines)
    shims = {e.name: memory_of(e.shims()) for e in engines}
    per: dict[str, dict[str, float]] = {}
    for e in engines:
        per[e.name] = {}
        for key in ("rss_mib", "pss_mib"):
            growth = loaded[e.name][key] - before[e.name][key] if e.name in loaded else 0.0
            per[e.name][key] = (growth + shims[e.name][key]) / n
    memory = {
        "daemon": {"idle": idle, "before_starts": before, "loaded": loaded},
        "shims": shims,
        "per_container": per,
    }
    return memory, start_times, ids


def bench_ps(engines: list[Engine], ref: str, n: int, running: bool) -> dict[str, list[float]]:
    for i in range(n):
        for e in engines:
            e.create(ref, running)
        if (i + 1) % 10 == 0:
            progress(f"  {i + 1}/{n} containers each")
    cmds: dict[str, Callable[[], Proc]] = {}
    for e in engines:
        cmds.update(e.ps())
    if not running:
        cmds.pop("ctr tasks ls", None)  # no tasks to list
    labels = list(cmds)
    samples: dict[str, list[float]] = {x: [] for x in labels}
    for i in range(PS_RUNS + 1):  # round 0: warm-up, and a check that each lists them all
        for label in rotated(labels, i):
            ms, res = timed(cmds[label], label)
            if i > 0:
                samples[label].append(ms)
            elif len(res.stdout.splitlines()) < n + 1:  # a header and n rows
                raise RuntimeError(f"{label} listed fewer than {n} containers:\n{res.stdout}")
    for e in engines:
        e.remove_all()
    return samples


# -- output ----------------------------------------------------------------------------------------

STATS: dict[str, Callable[[list[float]], float]] = {
    "median": statistics.median,
    "p90": p90,
    "mean": statistics.fmean,
}


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def table(head: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def compare(label: str, vals: dict[str, float | None], names: list[str], digits: int) -> list[str]:
    """label, each engine's value, then kettle's ratio to each peer."""
    k = vals.get("kettle")
    cells = [label, *(fmt(vals.get(n), digits) for n in names)]
    return cells + [ratio(k, vals.get(n)) for n in names if n != "kettle"]


def print_results(r: dict[str, Any]) -> None:
    a = r["args"]
    names: list[str] = a["engines"]
    peers = [n for n in names if n != "kettle"]
    head = ["", *names, *(f"kettle / {p}" for p in peers)]

    def timing_rows(what: str, samples: dict[str, list[float]]) -> list[list[str]]:
        return [
            compare(f"{what} {s}", {n: fn(samples[n]) for n in names}, names, 1)
            for s, fn in STATS.items()
        ]

    print(f"\n`run --rm IMAGE true`, ms, {a['runs']} runs after a warm-up:\n")
    table(head, timing_rows("run --rm", r["run_rm"]))
    print(
        f"\n{a['containers']} detached `sleep 1000` containers, started one at a time, then "
        "removed one at a time, ms per container:\n"
    )
    table(head, timing_rows("start", r["start"]) + timing_rows("remove", r["remove"]))

    m = r["memory"]
    n = a["containers"]

    def daemon(when: str, key: str) -> dict[str, float | None]:
        return {x: m["daemon"][when].get(x, {}).get(key) for x in names}

    print(
        f"\nMemory, MiB, from /proc/PID/smaps_rollup (daemons: kettled, containerd; podman has "
        f"none; shims: kettle's, containerd-shim-runc-v2, conmon), {n} running containers:\n"
    )
    table(
        head,
        [
            compare("daemon RSS, idle after the pull", daemon("idle", "rss_mib"), names, 1),
            compare("daemon PSS, idle after the pull", daemon("idle", "pss_mib"), names, 1),
            compare(f"daemon RSS, {n} running", daemon("loaded", "rss_mib"), names, 1),
            compare(f"daemon PSS, {n} running", daemon("loaded", "pss_mib"), names, 1),
            compare(
                "shim processes",
                {x: m["shims"][x]["processes"] for x in names},
                names,
                0,
            ),
            compare(
                "per container PSS (daemon growth + shims)",
                {x: m["per_container"][x]["pss_mib"] for x in names},
                names,
                2,
            ),
            compare(
                "per container RSS (daemon growth + shims)",
                {x: m["per_container"][x]["rss_mib"] for x in names},
                names,
                2,
            ),
        ],
    )

    ps = r["ps"]
    state = "running `sleep`" if a["ps_state"] == "running" else "created, never started"
    print(f"\nListing {a['ps_containers']} containers ({state}), ms, {PS_RUNS} runs:\n")
    kettle_med = statistics.median(ps["kctl ps -a"])
    rows = [
        [
            f"`{label}`",
            fmt(statistics.median(xs)),
            fmt(p90(xs)),
            ratio(kettle_med, statistics.median(xs)),
        ]
        for label, xs in ps.items()
    ]
    table(["command", "median", "p90", "kctl ps -a / this"], rows)
    print("\nRatios below 1.00x: kettle is faster or smaller.")


# -- the run ---------------------------------------------------------------------------------------


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def reproduce() -> str:
    """The command line of this run, to paste in a shell anywhere."""
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    script = Path(os.path.abspath(sys.argv[0])).relative_to(ROOT)
    argv = [str(python), str(script), *sys.argv[1:]]
    return f"cd {shlex.quote(str(ROOT))} && sudo {shlex.join(argv)}"


def build_image(work: Path) -> tuple[Registry, str]:
    """tests/support/image.py's busybox layout, pushed to a private plain-HTTP registry."""
    layout = build_oci_layout(work / "layout")
    port = free_port()
    config = work / "registry.yml"
    storage = work / "registry"
    write_registry_config(str(config), port, str(storage))
    reg = Registry(f"127.0.0.1:{port}", port, str(storage), str(config))
    reg.start()
    return reg, reg.push(str(layout), "latest", "kettle-bench/busybox")


def bench(args: argparse.Namespace, work: Path, cleanups: list[Callable[[], list[str]]]) -> None:
    reg, ref = build_image(work)

    def stop_registry() -> list[str]:
        reg.kill()
        return []

    cleanups.append(stop_registry)
    engines: list[Engine] = [Kettle(work / "kettled", reg.host), Ctr()]
    if not args.skip_podman:
        engines.append(PodmanSide(work / "podman"))
    for e in engines:
        cleanups.append(e.cleanup)  # run in reverse: every engine before the registry
        e.start()
        e.pull(ref)
    r: dict[str, Any] = {
        "command": reproduce(),
        "args": {
            "runs": args.runs,
            "containers": args.containers,
            "ps_containers": args.ps_containers,
            "ps_state": args.ps_state,
            "engines": [e.name for e in engines],
        },
        "image": ref,
    }
    time.sleep(SETTLE_S)
    idle = daemon_memory(engines)
    progress(f"1/4 run --rm: {args.runs} rounds after a warm-up")
    r["run_rm"] = bench_run_rm(engines, ref, args.runs)
    progress(f"2/4 detached starts and 3/4 memory: {args.containers} containers each")
    r["memory"], r["start"], ids = bench_memory(engines, ref, args.containers, idle)
    progress("2/4 removal, one at a time")
    r["remove"] = remove_detached(engines, ids)
    progress(f"4/4 ps: {args.ps_containers} containers each ({args.ps_state})")
    r["ps"] = bench_ps(engines, ref, args.ps_containers, args.ps_state == "running")
    print_results(r)
    print(f"\nreproduce: {r['command']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
        print(f"every sample: {args.json}")


# -- the reaping parent ----------------------------------------------------------------------------


def under_reaper(body: Callable[[], int]) -> int:
    """body() in a forked child while this process, a child subreaper, reaps until it ends.

    Shims and conmons are daemonised by a starter that exits, so they are reparented to the
    nearest subreaper, and PID 1 never reaps here.  A reaping thread inside the measuring
    process would race subprocess for its children's exit statuses; a separate process
    reaps only what is orphaned and costs the timed commands nothing.
    """
    from kettle import syscalls as sc

    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            # A process group of its own: a terminal's Ctrl-C reaches the parent only, which
            # passes it on once, so no second signal from the terminal (to us or to the ctr,
            # kctl and podman the cleanup runs) cuts the cleanup short.
            os.setpgid(0, 0)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, Interrupt.on_signal)
            code = body()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    while True:
        pid, status = os.wait()
        if pid == child:
            break
    # Zombies from the child's last cleanup: reap them, PID 1 would not.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    return os.waitstatus_to_exitcode(status)


Bench = Callable[[argparse.Namespace, Path, list[Callable[[], list[str]]]], None]


def run_private(body: Bench, args: argparse.Namespace, prefix: str) -> int:
    """body(args, work, cleanups) in a fresh /tmp directory; then every cleanup it registered,
    last first, also on failure or Ctrl-C, and whatever is left under the directory (mounts
    included) is removed.  Non-zero when anything had to be removed by force."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    cleanups: list[Callable[[], list[str]]] = []
    problems: list[str] = []
    try:
        body(args, work, cleanups)
    finally:
        Interrupt.cleaning = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        for fn in reversed(cleanups):
            try:
                problems += fn()
            except Exception as e:  # one failed teardown must not skip the others
                traceback.print_exc()
                problems.append(f"cleanup failed: {e!r}")
        problems += [f"mount {m}" for m in unmount_under(work)]
        shutil.rmtree(work, ignore_errors=True)
        if problems:
            print("cleanup had to remove:", *problems, sep="\n  ", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=15, help="run --rm rounds (after one warm-up)")
    ap.add_argument("--containers", type=int, default=50, help="detached containers each")
    ap.add_argument("--ps-containers", type=int, default=100, help="containers listed by ps")
    ap.add_argument(
        "--ps-state",
        choices=("running", "created"),
        default="running",
        help="the containers listed: running `sleep`, or created and never started",
    )
    ap.add_argument("--skip-podman", action="store_true")
    ap.add_argument("--json", metavar="FILE", help="also write every sample here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/daemon.py needs root", file=sys.stderr)
        return 2
    if min(args.runs, args.containers, args.ps_containers) < 1:
        print("--runs, --containers and --ps-containers must be at least 1", file=sys.stderr)
        return 2
    tools = ["/usr/bin/docker-registry", "skopeo", "containerd", "ctr", str(BIN / "kettled")]
    tools += [] if args.skip_podman else ["podman", "conmon"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.json:
        args.json = os.path.abspath(args.json)
    return under_reaper(partial(run_private, bench, args, "kettle-bench-daemon-"))


if __name__ == "__main__":
    sys.exit(main())
