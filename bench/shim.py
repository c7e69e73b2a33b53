"""containerd-shim-kettle-v2 against containerd-shim-runc-v2, under the same private containerd.

    sudo .venv/bin/python bench/shim.py [--runs 20] [--containers 50]
                                        [--skip-latency] [--skip-memory]

Latency: `ctr run --rm IMAGE ID true`, interleaved rounds over the configurations below, the
median per configuration.  Memory: N detached `sleep` containers per configuration, then PSS
and RSS of every shim process serving them, from /proc/PID/smaps_rollup (PSS shares pages
between processes fairly: the number to compare), divided by N.

Configurations:
- runc-shim: containerd's own shim with runc (io.containerd.runc.v2);
- kettle: the Kettle shim, defaults (containers pooled in one shim per namespace, containers
  made in-process by the Kettle runtime library, a shim exits when its last container goes);
- kettle-warm: the same with LingerSeconds = 5 (an idle shim waits for the next container),
  in a namespace of its own so that its pool shim is not shared with the `kettle` rows;
- kettle-per-container: Grouping = "container" (one shim per container, like runc's);
- kettle+runc: the Kettle shim driving /usr/sbin/runc (BinaryName).

Everything lives in a private containerd under /tmp (tests/shim/ctd.py), torn down at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.shim.ctd import RUNTIME, Containerd, processes_with  # noqa: E402
from tests.shim.image import IMAGE_NAME, build_archive  # noqa: E402

RUNC = "io.containerd.runc.v2"


def configs(ctd: Containerd) -> dict[str, tuple[str, ...]]:
    def toml(name: str, text: str) -> tuple[str, ...]:
        path = ctd.base / f"{name}.toml"
        path.write_text(text)
        return ("--runtime", RUNTIME, "--runtime-config-path", str(path))

    return {
        "runc-shim": ("--runtime", RUNC),
        "kettle": ("--runtime", RUNTIME),
        "kettle-warm": toml("warm", "LingerSeconds = 5\n"),
        "kettle-per-container": toml("own", 'Grouping = "container"\n'),
        "kettle+runc": toml("runc", 'BinaryName = "/usr/sbin/runc"\n'),
    }


def rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            out[parts[0][:-1]] = int(parts[1])
    return out


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def shim_pids(ctd: Containerd, binary: str) -> list[int]:
    return [
        p for p in processes_with(binary) if ctd.address in Path(f"/proc/{p}/cmdline").read_text()
    ]


def latency(
    ctd: Containerd, cfgs: dict[str, tuple[str, ...]], runs: int, warm_ns: str
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in cfgs}
    names = list(cfgs)

    def ns(name: str) -> str | None:
        return warm_ns if name == "kettle-warm" else None

    for name in names:  # warm-up: page cache, image unpack, pyc files
        ctd.ctr(
            "run",
            "--rm",
            *cfgs[name],
            IMAGE_NAME,
            f"w{uuid.uuid4().hex[:8]}",
            "true",
            namespace=ns(name),
        )
    for i in range(runs):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            if name == "kettle-warm":
                pass  # its shim lingers between runs: that is what it measures
            elif name == "kettle":
                time.sleep(0.05)  # let the previous pool shim exit
            t0 = time.perf_counter()
            res = ctd.ctr(
                "run",
                "--rm",
                *cfgs[name],
                IMAGE_NAME,
                f"l{uuid.uuid4().hex[:8]}",
                "true",
                check=False,
                namespace=ns(name),
            )
            samples[name].append((time.perf_counter() - t0) * 1000)
            if res.returncode != 0:
                raise RuntimeError(f"{name}: {res.stderr}")
    return samples


def memory(
    ctd: Containerd, cfgs: dict[str, tuple[str, ...]], n: int
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    deadline = time.monotonic() + 60
    while shim_pids(ctd, "containerd-shim-kettle-v2") and time.monotonic() < deadline:
        time.sleep(0.2)  # a lingering shim from the latency rounds would be counted
    for name in ("runc-shim", "kettle", "kettle-per-container"):
        ids = [f"m{uuid.uuid4().hex[:8]}" for _ in range(n)]
        try:
            for cid in ids:
                ctd.ctr("run", "-d", *cfgs[name], IMAGE_NAME, cid, "sleep", "100000")
            time.sleep(2)  # let every shim settle (lazy imports, first GC)
            binary = (
                "containerd-shim-runc-v2" if name == "runc-shim" else "containerd-shim-kettle-v2"
            )
            pids = shim_pids(ctd, binary)
            rolls = [rollup(p) for p in pids]
            out[name] = {
                "shims": len(pids),
                "pss_mib": sum(r.get("Pss", 0) for r in rolls) / 1024 / n,
                "rss_mib": sum(r.get("Rss", 0) for r in rolls) / 1024 / n,
                "private_mib": sum(
                    r.get("Private_Dirty", 0) + r.get("Private_Clean", 0) for r in rolls
                )
                / 1024
                / n,
                "threads": sum(threads(p) for p in pids),
                "total_pss_mib": sum(r.get("Pss", 0) for r in rolls) / 1024,
            }
        finally:
            for cid in ids:
                ctd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
            for cid in ids:
                for _ in range(100):
                    if ctd.ctr("tasks", "delete", cid, check=False).returncode == 0:
                        break
                    time.sleep(0.05)
                ctd.ctr("containers", "rm", cid, check=False)
        time.sleep(1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/shim.py needs root", file=sys.stderr)
        return 2
    from kettle import syscalls as sc

    # Shims whose start process exits are reparented to us: reap them (PID 1 here does not).
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    import threading

    def reap() -> None:
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.2)

    threading.Thread(target=reap, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="kettle-bench-shim-"))
    ctd = Containerd()
    try:
        ctd.start()
        archive = build_archive(work / "busybox.tar")
        ctd.ctr("images", "import", str(archive))
        warm_ns = ctd.add_namespace()
        ctd.ctr("images", "import", str(archive), namespace=warm_ns)
        cfgs = configs(ctd)
        if not args.skip_latency:
            samples = latency(ctd, cfgs, args.runs, warm_ns)
            print(f"\n`ctr run --rm IMAGE ID true`, median of {args.runs} (ms):\n")
            print("| configuration | median | p90 |")
            print("| --- | --- | --- |")
            for name, xs in samples.items():
                p90 = sorted(xs)[int(len(xs) * 0.9) - 1] if xs else 0.0
                print(f"| {name} | {statistics.median(xs):.1f} | {p90:.1f} |")
        if not args.skip_memory:
            mem = memory(ctd, cfgs, args.containers)
            print(f"\nShim memory with {args.containers} sleeping containers (per container):\n")
            print(
                "| configuration | shim processes | PSS MiB | RSS MiB | private MiB | threads "
                "| total PSS MiB |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for name, m in mem.items():
                print(
                    f"| {name} | {m['shims']:.0f} | {m['pss_mib']:.2f} | {m['rss_mib']:.2f} | "
                    f"{m['private_mib']:.2f} | {m['threads']:.0f} | {m['total_pss_mib']:.1f} |"
                )
        print(f"\nreproduce: sudo {sys.executable} {' '.join(sys.argv)}")
    finally:
        problems = ctd.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
        if problems:
            print("cleanup:", problems, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
