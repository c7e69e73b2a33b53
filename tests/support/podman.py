"""podman with private configuration and storage, per machine-notes.md."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

from tests.support import leaks


class Podman:
    def __init__(self, base: Path, runtime: Path) -> None:
        self.base = base
        self.runtime = runtime
        self.cgroup_parent = f"kettle-test-podman-{uuid.uuid4().hex[:8]}"
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(base / "home"),
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(base / "registries.conf"),
            "TMPDIR": str(base / "tmp"),
        }

    def setup(self) -> None:
        for d in ("home", "tmp", "root", "runroot", "volumes"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        # Debian's defaults ask for ulimits above this machine's hard limits, and systemd.
        (self.base / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            'netns = "none"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.base / "events.log"}"\n'
            f'tmp_dir = "{self.base / "tmp"}"\n'
            f'volume_path = "{self.base / "volumes"}"\n'
            f'static_dir = "{self.base / "root" / "libpod"}"\n'
        )
        (self.base / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.base / "root"}"\n'
            f'runroot = "{self.base / "runroot"}"\n'
        )
        (self.base / "registries.conf").write_text("unqualified-search-registries = []\n")

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "podman",
            "--root",
            str(self.base / "root"),
            "--runroot",
            str(self.base / "runroot"),
            "--runtime",
            str(self.runtime),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--tmpdir",
            str(self.base / "tmp"),
            *args,
        ]
        proc = subprocess.run(
            argv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def run_args(self) -> list[str]:
        """Options every `podman run` in the tests uses."""
        return ["--cgroup-parent", f"/{self.cgroup_parent}", "--network", "none"]

    def teardown(self) -> list[str]:
        problems = []
        self("rm", "--all", "--force", "--time", "0", check=False)
        self("rmi", "--all", "--force", check=False)
        for line in sorted(leaks.mounts_naming(str(self.base)), key=len, reverse=True):
            mount_point = line.split()[4]
            subprocess.run(["umount", "-l", mount_point], check=False)
            if "/overlay/" in mount_point and mount_point.endswith("/merged"):
                problems.append(f"podman left a container mount: {mount_point}")
        problems += [p for p in leaks.processes_naming(str(self.base)) if "conmon" in p]
        problems += leaks.remove_empty_cgroups(self.cgroup_parent)
        shutil.rmtree(self.base, ignore_errors=True)
        return problems
