"""A private containerd 1.6 for the shim tests, and everything needed to leave nothing behind.

Own root, state, gRPC/ttrpc sockets and config under a short temp dir (sun_path limit), a
unique containerd namespace (so the runtime roots under /run/containerd/<runtime>/<ns> and the
cgroups under /sys/fs/cgroup/*/<ns> are ours alone), and a PATH whose first directory holds a
`containerd-shim-kettle-v2` symlink to the venv's console script.  `stop()` deletes every
task and container, stops containerd by pid, kills the shims that served this address,
unmounts what is left under the temp dir, removes our cgroups and runtime roots, and reports
whatever it had to clean up by force.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SHIM_NAME = "containerd-shim-kettle-v2"
RUNTIME = "io.containerd.kettle.v2"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SOCKET_DIR = Path("/run/containerd/s")


def shim_script() -> Path:
    return Path(sys.executable).parent / SHIM_NAME


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def processes_with(fragment: str) -> list[int]:
    """Live processes whose command line contains fragment (never this process)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state == "Z":
            continue
        if fragment in " ".join(_cmdline(int(entry.name))):
            out.append(int(entry.name))
    return out


class Containerd:
    def __init__(
        self, *, cri: bool = False, extra_config: str = "", env: dict[str, str] | None = None
    ):
        self.base = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
        self.namespace = f"kt-{uuid.uuid4().hex[:10]}"
        #: every namespace used (teardown covers them all)
        self.namespaces = [self.namespace]
        #: namespaces whose tasks and containers teardown removes, but whose runtime state
        #: and cgroups are not named after them (CRI's k8s.io)
        self.foreign_namespaces: list[str] = []
        #: more top-level cgroup names that are ours (a CRI pod's cgroup parent)
        self.cgroup_tops: list[str] = []
        self.address = str(self.base / "c.sock")
        self.bin_dir = self.base / "bin"
        self.bin_dir.mkdir()
        (self.bin_dir / SHIM_NAME).symlink_to(shim_script())
        self.log_path = self.base / "containerd.log"
        self.fifo_dir = self.base / "fifo"
        self.cri = cri
        self.extra_config = extra_config
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._socket_dir_existed = SOCKET_DIR.exists()
        self._log = None

    # -- running --------------------------------------------------------------------------

    def config_text(self) -> str:
        disabled = [
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.tracing.processor.v1.otlp",
        ]
        if not self.cri:
            disabled.append("io.containerd.grpc.v1.cri")
        quoted = ", ".join(f'"{d}"' for d in disabled)
        return (
            f'version = 2\nroot = "{self.base}/root"\nstate = "{self.base}/state"\n'
            f"disabled_plugins = [{quoted}]\n"
            f'[grpc]\n  address = "{self.address}"\n'
            f'[ttrpc]\n  address = "{self.address}.ttrpc"\n'
            f'[debug]\n  level = "debug"\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.base}/opt"\n'
            + self.extra_config
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        config = self.base / "config.toml"
        config.write_text(self.config_text())
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdout=self._log,
            stderr=self._log,
            env=self.env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited: {self.log_path.read_text()[-3000:]}")
            if Path(self.address).exists():
                try:
                    self.ctr("version", timeout=10)
                    return
                except AssertionError:
                    pass  # not serving yet
            time.sleep(0.05)
        raise RuntimeError(f"containerd did not start: {self.log_path.read_text()[-3000:]}")

    def stop_daemon(self) -> None:
        """Stop containerd only (shims and containers keep running)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop_daemon()
        self.start()

    def add_namespace(self) -> str:
        ns = f"kt-{uuid.uuid4().hex[:10]}"
        self.namespaces.append(ns)
        return ns

    def ctr_argv(self, *args: str, namespace: str | None = None) -> list[str]:
        argv = list(args)
        # Keep ctr's fifos under our directory rather than the shared /run/containerd/fifo.
        if argv[:1] == ["run"]:
            argv[1:1] = ["--fifo-dir", str(self.fifo_dir)]
        elif argv[:2] in (["tasks", "exec"], ["task", "exec"], ["tasks", "start"]):
            argv[2:2] = ["--fifo-dir", str(self.fifo_dir)]
        return ["ctr", "-a", self.address, "-n", namespace or self.namespace, *argv]

    def ctr(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = 60,
        check: bool = True,
        namespace: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self.ctr_argv(*args, namespace=namespace),
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and res.returncode != 0:
            raise AssertionError(f"{res.args} failed ({res.returncode}): {res.stderr}")
        return res

    def shim_pids(self) -> list[int]:
        """Live kettle shims serving this containerd."""
        return [p for p in processes_with(SHIM_NAME) if self.address in _cmdline(p)]

    def runtime_roots(self) -> list[Path]:
        return [
            Path("/run/containerd") / d / ns
            for d in ("kettle", "runc", "kettle-runtime", "crun")
            for ns in self.namespaces
        ]

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Tear everything down; returns what had to be removed by force."""
        problems: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            for ns in self.namespaces + self.foreign_namespaces:
                with contextlib.suppress(Exception):
                    self._remove_all(ns)
            # Shims exit on their own once their last task is deleted.
            deadline = time.monotonic() + 10
            while self.shim_pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.stop_daemon()
        killed = False
        for pid in self.shim_pids():
            problems.append(f"shim {pid} still running: killed")
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if killed:
            # A killed shim cannot remove its socket: find them through the bundles' address.
            for f in (self.base / "state").glob("io.containerd.runtime.v2.task/*/*/address"):
                with contextlib.suppress(OSError):
                    Path(f.read_text().strip().removeprefix("unix://")).unlink()
        for pid in processes_with(f"{self.base}/"):
            problems.append(f"process {pid} ({' '.join(_cmdline(pid))[:80]}) left: killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        problems += self._unmount_all()
        problems += self._remove_cgroups()
        for root in self.runtime_roots():
            if root.exists():
                leftovers = [p.name for p in root.iterdir()]
                if leftovers:
                    problems.append(f"runtime state left in {root}: {leftovers}")
                shutil.rmtree(root, ignore_errors=True)
        for d in self.runtime_roots():
            with contextlib.suppress(OSError):
                d.parent.rmdir()  # only if empty: another user may share it
        if not self._socket_dir_existed:
            with contextlib.suppress(OSError):
                (SOCKET_DIR / ".kettle-start.lock").unlink()
                SOCKET_DIR.rmdir()
        shutil.rmtree(self.base, ignore_errors=True)
        return problems

    def _remove_all(self, ns: str) -> None:
        def ctr(*args: str) -> subprocess.CompletedProcess[str]:
            return self.ctr(*args, check=False, timeout=30, namespace=ns)

        tasks = ctr("tasks", "ls", "-q").stdout.split()
        for task in tasks:
            ctr("tasks", "kill", "-a", "-s", "KILL", task)
        for task in tasks:
            for _ in range(50):
                if ctr("tasks", "delete", task).returncode == 0:
                    break
                time.sleep(0.1)
        for c in ctr("containers", "ls", "-q").stdout.split():
            ctr("containers", "rm", c)

    def _unmount_all(self) -> list[str]:
        problems = []
        for _ in range(100):
            mounts = [
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(str(self.base) + "/")
            ]
            if not mounts:
                break
            target = max(mounts, key=len)
            problems.append(f"mount {target} left: unmounted")
            subprocess.run(["umount", "-l", target], check=False)
        return problems

    def _remove_cgroups(self) -> list[str]:
        problems = []
        names = self.namespaces + self.cgroup_tops
        for hierarchy, ns in [(h, n) for h in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()] for n in names]:
            top = hierarchy / ns
            if not top.is_dir():
                continue
            for d in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
                if d.is_dir():
                    problems.append(f"cgroup {d} left: removed")
                    with contextlib.suppress(OSError):
                        d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        return problems
