"""A private containerd 1.6 (own root, state, socket and config), stopped by pid afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.support import leaks


class Containerd:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.address = base / "containerd.sock"
        self.config = base / "config.toml"
        self.log = base / "containerd.log"
        # A namespace of our own keeps the shims' runc root (/run/containerd/runc/<ns>) ours.
        self.namespace = f"kettle-test-{uuid.uuid4().hex[:8]}"
        self.runc_root = base / "runc-root"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[ttrpc]\n"
            f'  address = "{self.address}.ttrpc"\n'
            "[debug]\n"
            f'  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
        )
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.config), "--log-level", "info"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited: {self.log.read_text()[-2000:]}")
            if self.address.exists() and self.ctr("version", check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["ctr", "--address", str(self.address), "--namespace", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ctr {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def shim_pids(self) -> list[int]:
        """containerd-shim processes started by this instance (their cmdline names our socket)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                if "containerd-shim" in cmdline and str(self.address) in cmdline:
                    pids.append(int(entry.name))
        return pids

    def stop(self) -> list[str]:
        """Stops containerd and its shims; unmounts and removes everything; returns leaks."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.shim_pids():
            problems.append(f"containerd shim {pid} still running")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for line in leaks.mounts_naming(str(self.base)):
            mount_point = line.split()[4]
            problems.append(f"mount left under containerd root: {mount_point}")
        for line in sorted(leaks.mounts_naming(str(self.base)), key=len, reverse=True):
            subprocess.run(["umount", "-l", line.split()[4]], check=False)
        shutil.rmtree(Path("/run/containerd/runc") / self.namespace, ignore_errors=True)
        # containerd puts tasks in /<namespace>/<id> and never removes the namespace level.
        problems += leaks.remove_empty_cgroups(self.namespace)
        shutil.rmtree(self.base, ignore_errors=True)
        return problems
