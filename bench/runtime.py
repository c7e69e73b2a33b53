"""Benchmark: kettle-runtime against runc and crun, side by side in one run.

Measures, for /bin/true in a busybox bundle:
  * `run` in the foreground (spawn to exit), and
  * create + start + wait + delete, the way a containerd shim drives a runtime (create with
    --pid-file, start, wait for the init as its subreaper, delete), also split per step.

crun refuses this machine's hybrid cgroup layout while a cgroup2 mount holds a controller, so
the whole benchmark re-executes itself inside a private mount namespace in which
/sys/fs/cgroup/unified is unmounted (machine-notes.md); every runtime runs in that same
namespace so the comparison stays fair.  Iterations are interleaved (and the runtime order
rotated) so that machine noise hits all runtimes alike.  Medians are printed as a table.

Usage (root):  .venv/bin/python bench/runtime.py [--iterations N] [--runtime NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.bundle import build_rootfs, default_config  # noqa: E402

INNER_FLAG = "--inside-private-mount-namespace"
PR_SET_CHILD_SUBREAPER = 36
OPERATIONS = ["run", "create+start+wait+delete", "create", "start", "delete"]


def default_runtimes() -> dict[str, Path]:
    candidates = {
        "kettle-runtime": REPO / ".venv" / "bin" / "kettle-runtime",
        "runc": Path(shutil.which("runc") or "/usr/sbin/runc"),
        "crun": Path(shutil.which("crun") or "/usr/bin/crun"),
    }
    return {name: path for name, path in candidates.items() if path.exists()}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="measured rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first")
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="runtime to compare (repeatable); default: kettle-runtime, runc, crun",
    )
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    parser.add_argument(INNER_FLAG, action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def reexec_in_private_mount_namespace(argv: list[str]) -> int:
    """Runs this script again under `unshare -m --propagation private`."""
    cmd = ["unshare", "-m", "--propagation", "private", sys.executable, __file__, *argv]
    return subprocess.call([*cmd, INNER_FLAG])


def hide_cgroup2_mount() -> str:
    unified = Path("/sys/fs/cgroup/unified")
    if not unified.is_mount():
        return "no /sys/fs/cgroup/unified mount (nothing to hide)"
    subprocess.run(["umount", str(unified)], check=True)
    return "/sys/fs/cgroup/unified unmounted in a private mount namespace (for crun)"


class Bench:
    def __init__(self, runtimes: dict[str, Path], workdir: Path) -> None:
        self.runtimes = runtimes
        self.workdir = workdir
        self.bundle = workdir / "bundle"
        build_rootfs(self.bundle / "rootfs")
        config = default_config(["/bin/true"])
        (self.bundle / "config.json").write_text(json.dumps(config))
        self.samples: dict[str, dict[str, list[float]]] = {
            name: {op: [] for op in OPERATIONS} for name in runtimes
        }
        self.devnull = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the bench

    def argv(self, name: str, *args: str) -> list[str]:
        return [str(self.runtimes[name]), "--root", str(self.workdir / f"root-{name}"), *args]

    def call(self, name: str, *args: str) -> None:
        # stderr goes to a file, not a pipe: a created container keeps the runtime's stdio, and
        # reading a pipe to EOF would wait for the container.
        with open(self.workdir / "stderr", "w+b") as err:
            rc = subprocess.call(self.argv(name, *args), stdout=self.devnull, stderr=err)
            if rc != 0:
                err.seek(0)
                message = err.read().decode(errors="replace").strip()
                raise RuntimeError(f"{name} {' '.join(args)} exited {rc}: {message}")

    def one_round(self, name: str, record: bool) -> None:
        cid = f"bench-{uuid.uuid4().hex[:10]}"
        t0 = time.perf_counter()
        self.call(name, "run", "--bundle", str(self.bundle), cid)
        t_run = time.perf_counter() - t0
        self.call(name, "delete", "--force", cid)  # no-op after a successful run

        cid = f"bench-{uuid.uuid4().hex[:10]}"
        pid_file = self.workdir / f"{cid}.pid"
        t0 = time.perf_counter()
        self.call(name, "create", "--bundle", str(self.bundle), "--pid-file", str(pid_file), cid)
        t1 = time.perf_counter()
        pid = int(pid_file.read_text())
        self.call(name, "start", cid)
        t2 = time.perf_counter()
        os.waitpid(pid, 0)  # we are the subreaper the init was reparented to
        t3 = time.perf_counter()
        self.call(name, "delete", cid)
        t4 = time.perf_counter()
        pid_file.unlink()
        if record:
            s = self.samples[name]
            s["run"].append(t_run)
            s["create+start+wait+delete"].append(t4 - t0)
            s["create"].append(t1 - t0)
            s["start"].append(t2 - t1)
            s["delete"].append(t4 - t3)

    def cleanup(self) -> None:
        """Force-deletes whatever a failed round left in each runtime's root."""
        for name in self.runtimes:
            root = self.workdir / f"root-{name}"
            if root.is_dir():
                for entry in root.iterdir():
                    subprocess.call(
                        self.argv(name, "delete", "--force", entry.name),
                        stdout=self.devnull,
                        stderr=self.devnull,
                    )
        self.devnull.close()

    def run(self, iterations: int, warmup: int) -> None:
        names = list(self.runtimes)
        for i in range(warmup + iterations):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                self.one_round(name, record=i >= warmup)

    def table(self) -> str:
        names = list(self.runtimes)
        base = [n for n in ("runc", "crun") if n in names]
        subject = "kettle-runtime" if "kettle-runtime" in names else None
        header = ["operation (median ms)", *names]
        if subject:
            header += [f"{subject}/{b}" for b in base if b != subject]
        rows = [header]
        for op in OPERATIONS:
            medians = {n: statistics.median(self.samples[n][op]) * 1000 for n in names}
            row = [op, *(f"{medians[n]:.1f}" for n in names)]
            if subject:
                row += [f"{medians[subject] / medians[b]:.2f}x" for b in base if b != subject]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/runtime.py: needs root", file=sys.stderr)
        return 2
    if not getattr(args, INNER_FLAG.lstrip("-").replace("-", "_")):
        return reexec_in_private_mount_namespace(argv)

    runtimes = default_runtimes()
    if args.runtime:
        runtimes = {n: Path(p) for n, p in (spec.split("=", 1) for spec in args.runtime)}
    note = hide_cgroup2_mount()

    from kettle.syscalls import prctl

    prctl(PR_SET_CHILD_SUBREAPER, 1)
    workdir = Path(tempfile.mkdtemp(prefix="kettle-bench-"))
    bench = Bench(runtimes, workdir)
    try:
        bench.run(args.iterations, args.warmup)
    finally:
        bench.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    shown = [a for a in argv if a != INNER_FLAG]
    reproduce = shlex.join([".venv/bin/python", "bench/runtime.py", *shown])
    print(f"# {args.iterations} interleaved rounds after {args.warmup} warm-up; {note}")
    print(f"# runtimes: {', '.join(f'{n}={p}' for n, p in runtimes.items())}")
    print(f"# host: {os.uname().nodename}, {os.cpu_count()} CPUs, kernel {os.uname().release}")
    print(bench.table())
    print(f"# reproduce: sudo {reproduce}")
    if args.json:
        args.json.write_text(json.dumps(bench.samples, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
