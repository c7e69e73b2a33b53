"""A private kettled and kctl against it: tests/daemon's fixture and bench/daemon.py's engine.

Private means its own root, state and socket under one base directory, and a shim namespace of
its own (so its shims, their sockets and runtime state, and its containers' cgroups are told
apart from anyone else's).  ``cleanup`` removes every container, stops kettled, then removes
whatever is still left (shims, mounts under the base, cgroups, shim state) and says what.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: where kettled's shims keep their runtime state, one directory per namespace
SHIM_STATE = Path("/run/containerd/kettle")


def cmdline(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def unmount_under(base: Path) -> list[str]:
    """Lazily unmount every mount below base, deepest first; their targets."""
    left = []
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        target = line.split()[4]
        if target.startswith(str(base) + "/"):
            left.append(target)
            subprocess.run(["umount", "-l", target], check=False)
    return left


class Kettled:
    def __init__(
        self, base: Path, plain_http: str, prefix: str = "kt", log_level: str = "debug"
    ) -> None:
        self.namespace = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.base = base
        base.mkdir()
        self.root = base / "root"
        self.state = base / "state"
        self.address = str(base / "kettle.sock")
        self.config = base / "kettled.toml"
        self.config.write_text(
            f'namespace = "{self.namespace}"\n[registry]\nplain_http = ["{plain_http}"]\n'
        )
        self.log = base / "kettled.log"
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            *(str(BIN / "kettled"), "--config", str(self.config), "--root", str(self.root)),
            *("--state", str(self.state), "--address", self.address),
            *("--log-level", self.log_level),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"kettled exited: {self.log.read_text()[-2000:]}")
            if os.path.exists(self.address) and self.kctl("version").returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("kettled did not start answering")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> bool:
        """SIGTERM; False if kettled had to be killed."""
        if self.proc is None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -1
        self.proc = None
        return code == 0

    def kctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kctl"), "--address", self.address, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> str:
        res = self.kctl(*args)
        assert res.returncode == 0, f"kctl {' '.join(args)}: {res.stderr}"
        return res.stdout

    def shims(self) -> list[int]:
        tag = f"-namespace {self.namespace} "
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and tag in cmdline(p)]

    def cgroup_dirs(self) -> list[Path]:
        # cgroup2 hosts: /sys/fs/cgroup/<ns>; v1 and hybrid: /sys/fs/cgroup/<hierarchy>/<ns>.
        candidates = [CGROUP_ROOT / self.namespace]
        candidates += [h / self.namespace for h in CGROUP_ROOT.iterdir() if h.is_dir()]
        return [d for d in candidates if d.is_dir()]

    def cleanup(self) -> list[str]:
        """Remove everything this kettled made; a list of what had leaked."""
        leaks: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            res = self.kctl("ps", "-a", "-q", "--no-trunc")
            if res.returncode == 0 and res.stdout.split():
                self.kctl("rm", "-f", *res.stdout.split(), timeout=600)
        if not self.stop():
            leaks.append("kettled did not exit 0 on SIGTERM")
        deadline = time.monotonic() + 15
        while self.shims() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.shims():
            leaks.append(f"shim {pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leaks += [f"mount {m}" for m in unmount_under(self.base)]
        for d in self.cgroup_dirs():
            children = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            leaks += [f"cgroup {c}" for c in children]
            for c in children:
                with contextlib.suppress(OSError):
                    c.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()
        state = SHIM_STATE / self.namespace
        if state.is_dir():
            leaks += [f"runtime state {p}" for p in state.iterdir()]
            shutil.rmtree(state, ignore_errors=True)
        return leaks
