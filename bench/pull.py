"""Pull + unpack benchmark: kettle vs `ctr pull` (private containerd) vs `podman pull`.

Builds a ~200 MiB, 5-layer image of random content, pushes it with skopeo to a docker-registry
on 127.0.0.1, then pulls it with each tool into a fresh, empty store (cold cache) several
times, interleaved, and prints medians and kettle's ratio to the faster of the other two.

    sudo .venv/bin/python bench/pull.py [--runs 5] [--size-mib 200] [--layers 5]

Needs root, docker-registry, skopeo, containerd + ctr and podman (a tool that is missing is
left out of the table).  Everything lives in one temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, ".venv", "bin", "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- the image ------------------------------------------------------------------------------


def make_layer(size: int, seed: int) -> bytes:
    """A layer of random content: a few big files and a few hundred small ones."""
    rnd = io.BytesIO()
    buf = io.BytesIO()
    small_total = size // 8
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo(f"layer{seed}")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tf.addfile(d)
        n_small = 400
        for i in range(n_small):
            data = os.urandom(small_total // n_small)
            ti = tarfile.TarInfo(f"layer{seed}/small/f{i:04d}")
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
        big = size - small_total
        for i in range(4):
            data = os.urandom(big // 4)
            ti = tarfile.TarInfo(f"layer{seed}/big{i}.bin")
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    del rnd
    return buf.getvalue()


def build_layout(path: str, total: int, layers: int) -> None:
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data: bytes) -> dict[str, object]:
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    descs, diff_ids = [], []
    for i in range(layers):
        tar = make_layer(total // layers, i)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        gz = gzip.compress(tar, compresslevel=1, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gz)})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {"Cmd": ["/bin/sh"]},
    }
    cdesc = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        **put(json.dumps(config).encode()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cdesc,
        "layers": descs,
    }
    mdesc = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **put(json.dumps(manifest).encode()),
    }
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [mdesc]}, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


# --- the contenders -------------------------------------------------------------------------


def mounts_under(base: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point == base or point.startswith(base + "/"):
                out.append(point)
    return out


def unmount_under(base: str) -> None:
    for point in sorted(mounts_under(base), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def timed(cmd: list[str], env: dict[str, str] | None = None, expect: bytes = b"") -> float:
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, env=env)
    elapsed = time.monotonic() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    if expect and expect not in proc.stdout + proc.stderr:
        raise RuntimeError(f"{cmd[0]} did not report {expect!r}: the comparison would be unfair")
    return elapsed


def run_kettle(work: str, ref: str, host: str) -> float:
    root = os.path.join(work, "kettle")
    try:
        return timed([PY, "-m", "kettle.image", "--root", root, "--plain-http", host, "pull", ref])
    finally:
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def run_ctr(work: str, ref: str, host: str) -> float:
    d = os.path.join(work, "containerd")
    os.makedirs(d)
    sock = os.path.join(d, "containerd.sock")
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(
            "version = 2\n"
            f'root = "{d}/root"\nstate = "{d}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{sock}"\n'
            f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
            f'[debug]\n  address = "{sock}.debug"\n'
        )
    proc = subprocess.Popen(
        ["containerd", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: os.path.exists(sock), "containerd socket")
        # ctr pull unpacks into the overlayfs snapshotter too (it prints "unpacking ...").
        return timed(
            ["ctr", "-a", sock, "-n", "bench", "images", "pull", "--plain-http", ref],
            expect=b"unpacking",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def run_podman(work: str, ref: str, host: str) -> float:
    d = os.path.join(work, "podman")
    os.makedirs(d)
    conf = os.path.join(d, "containers.conf")
    with open(conf, "w") as f:
        f.write(
            '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        )
    env = dict(os.environ, CONTAINERS_CONF=conf)
    try:
        return timed(
            [
                "podman", "--root", f"{d}/root", "--runroot", f"{d}/run",
                "--storage-driver", "overlay", "--storage-opt", "overlay.skip_mount_home=true",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "pull", "-q", "--tls-verify=false", ref,
            ],
            env,
        )  # fmt: skip
    finally:
        unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


CONTENDERS: dict[str, tuple[str, Callable[[str, str, str], float]]] = {
    "kettle": ("", run_kettle),
    "ctr": ("ctr", run_ctr),
    "podman": ("podman", run_podman),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--size-mib", type=int, default=200)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--only", action="append", default=[])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/pull.py needs root", file=sys.stderr)
        return 2
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    names = [n for n in CONTENDERS if (not args.only or n in args.only)]
    names = [n for n in names if not CONTENDERS[n][0] or shutil.which(CONTENDERS[n][0])]
    base = tempfile.mkdtemp(prefix="kettle-bench-", dir="/var/tmp")
    reg = None
    try:
        layout = os.path.join(base, "layout")
        t = time.monotonic()
        build_layout(layout, args.size_mib << 20, args.layers)
        print(f"built {args.size_mib} MiB / {args.layers} layers in {time.monotonic() - t:.1f}s")
        port = free_port()
        host = f"127.0.0.1:{port}"
        cfg = os.path.join(base, "registry.yml")
        with open(cfg, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {base}/registry\n"
                f"http:\n  addr: {host}\n"
            )
        reg = subprocess.Popen(
            ["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: port_open(port), "registry")
        ref = f"{host}/bench/image:latest"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
             f"oci:{layout}:latest", f"docker://{ref}"],
            check=True,
        )  # fmt: skip
        work = os.path.join(base, "work")
        os.makedirs(work)
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.runs):
            order = names[i % len(names) :] + names[: i % len(names)]
            for n in order:
                times[n].append(CONTENDERS[n][1](work, ref, host))
            print(
                f"run {i + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names), flush=True
            )
        med = {n: statistics.median(v) for n, v in times.items()}
        print(f"\n{'tool':8} {'median':>9} {'min':>9} {'max':>9}")
        for n in names:
            print(f"{n:8} {med[n]:8.3f}s {min(times[n]):8.3f}s {max(times[n]):8.3f}s")
        others = [med[n] for n in names if n != "kettle"]
        if "kettle" in med and others:
            best = min(others)
            ratio = med["kettle"] / best
            print(f"\nkettle / fastest other = {ratio:.2f} (target <= 0.80)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"times": times, "medians": med}, f, indent=2)
    finally:
        if reg is not None:
            reg.kill()
            reg.wait()
        unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
