"""A real kettled, kctl, shims and a local registry (docker-registry) with a busybox image.

Everything is private to the session: a registry on 127.0.0.1, kettled's root, state and
socket in a temporary directory, and a shim namespace of its own (so the shims, their sockets,
runtime state and container cgroups are all told apart from anyone else's).  The teardown
removes every container, stops kettled, then checks that no shim, mount or cgroup is left,
cleaning up and failing if one is.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.image.oci_fixture import Registry, free_port, write_registry_config
from tests.support import bundle as support_bundle
from tests.support import image as support_image

BIN = Path(sys.executable).parent
CGROUP_ROOT = Path("/sys/fs/cgroup")
SHIM_STATE = Path("/run/containerd/kettle")
PASSWD = "alice:x:1500:1600:Alice:/home/alice:/bin/sh\n"
GROUP = "alices:x:1600:\nstaff:x:50:alice,bob\nwheel:x:10:\n"


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("/usr/bin/docker-registry", "skopeo", str(BIN / "kettled"), str(BIN / "kctl")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")


@dataclass
class Image:
    ref: str
    registry: str


def _build_layout(dest: Path) -> Path:
    """tests.support's busybox layout, with users and groups for kctl run -u to resolve."""
    original = support_bundle.build_rootfs

    def with_users(rootfs: Path, probe: Path | None = None) -> Path:
        out = original(rootfs, probe)
        with (out / "etc" / "passwd").open("a") as f:
            f.write(PASSWD)
        with (out / "etc" / "group").open("a") as f:
            f.write(GROUP)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(support_image, "build_rootfs", with_users)
        return support_image.build_oci_layout(dest)


@pytest.fixture(scope="session")
def daemon_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kettle-daemon-test-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def image(daemon_tmp: Path) -> Iterator[Image]:
    """A plain-HTTP registry serving kettle-test/busybox:latest."""
    _need()
    layout = _build_layout(daemon_tmp / "layout")
    port = free_port()
    config = daemon_tmp / "registry.yml"
    storage = daemon_tmp / "registry"
    write_registry_config(str(config), port, str(storage))
    reg = Registry(f"127.0.0.1:{port}", port, str(storage), str(config))
    reg.start()
    try:
        ref = reg.push(str(layout), "latest", "kettle-test/busybox")
        yield Image(ref=ref, registry=reg.host)
    finally:
        reg.kill()


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Kettled:
    def __init__(self, base: Path, plain_http: str) -> None:
        self.namespace = f"kt-{uuid.uuid4().hex[:10]}"
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
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(str(BIN / "kettled"), "--config", str(self.config), "--root", str(self.root)),
                    *(
                        "--state",
                        str(self.state),
                        "--address",
                        self.address,
                        "--log-level",
                        "debug",
                    ),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
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
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and tag in _cmdline(p)]

    def cgroup_dirs(self) -> list[Path]:
        # cgroup2 hosts: /sys/fs/cgroup/<ns>; v1 and hybrid: /sys/fs/cgroup/<hierarchy>/<ns>.
        candidates = [CGROUP_ROOT / self.namespace]
        candidates += [h / self.namespace for h in CGROUP_ROOT.iterdir() if h.is_dir()]
        return [d for d in candidates if d.is_dir()]

    def cleanup(self) -> list[str]:
        """Remove everything this kettled made; a list of what had leaked."""
        leaks: list[str] = []
        if self.proc is not None:
            ids = self.ok("ps", "-a", "-q").split()
            for cid in ids:
                self.kctl("rm", "-f", cid)
            if not self.stop():
                leaks.append("kettled did not exit 0 on SIGTERM")
        deadline = time.monotonic() + 15
        while self.shims() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.shims():
            leaks.append(f"shim {pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            target = line.split()[4]
            if target.startswith(str(self.base)):
                leaks.append(f"mount {target}")
                subprocess.run(["umount", "-l", target], check=False)
        for d in self.cgroup_dirs():
            children = sorted(p for p in d.iterdir() if p.is_dir())
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


@pytest.fixture(scope="session")
def kettled(daemon_tmp: Path, image: Image) -> Iterator[Kettled]:
    k = Kettled(daemon_tmp / "kettled", image.registry)
    try:
        k.start()
        yield k
    finally:
        leaks = k.cleanup()
        if leaks:
            pytest.fail(f"left behind: {leaks}\n{k.log.read_text()[-3000:]}")


def wait_for(check: object, what: str, timeout: float = 30) -> None:
    """Poll check() until it is true (a deadline, not a speed assertion)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
