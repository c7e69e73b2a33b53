"""The containerd-shim-kettle-v2 program itself: `start` as containerd runs it (output read to
EOF, address file, fd 3 handed to a detached daemon, pools), the serving daemon, `-v`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kettle.proto import task_pb
from kettle.shim.address import socket_path, to_address
from tests.shim.ctd import shim_script

SERVICE = task_pb.TASK_SERVICE.name


def shim(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    if not shim_script().is_file():
        pytest.skip(f"{shim_script()} is missing: reinstall kettle into the venv")
    return subprocess.run(
        [str(shim_script()), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,  # containerd's CombinedOutput: this returns only at EOF
        timeout=30,
    )


def test_version_and_bad_flags() -> None:
    res = shim("-v")
    assert res.returncode == 0
    assert b"containerd-shim-kettle-v2" in res.stdout
    bad = shim("-frobnicate", "start")
    assert bad.returncode == 1
    assert b"flag provided but not defined: -frobnicate" in bad.stderr


class Started:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = str(base / "containerd.sock")
        self.namespace = f"kt-{uuid.uuid4().hex[:8]}"
        self.daemons: set[int] = set()

    def bundle(self, cid: str, annotations: dict[str, str] | None = None) -> Path:
        b = self.base / cid
        b.mkdir()
        (b / "config.json").write_text(json.dumps({"annotations": annotations or {}}))
        return b

    def start(self, cid: str, env: dict[str, str] | None = None, **kw: object) -> str:
        b = self.bundle(cid, **kw)  # type: ignore[arg-type]
        args = ["-namespace", self.namespace, "-address", self.address, "-id", cid, "start"]
        res = shim(*args, cwd=b, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stderr == b""
        address = res.stdout.decode()
        assert (b / "address").read_text() == address
        self.daemons.add(self.connect(address).shim_pid)
        return address

    def connect(self, address: str) -> task_pb.ConnectResponse:
        from kettle.ttrpc import Client

        with Client.connect(address, timeout=10) as c:
            return c.call(
                SERVICE,
                "Connect",
                task_pb.ConnectRequest(id="x"),
                task_pb.ConnectResponse,
                timeout=10,
            )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    if os.geteuid() != 0:
        pytest.skip("needs root (/run/containerd/s)")
    s = Started(tmp_path)
    try:
        yield s
    finally:
        for pid in s.daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in s.daemons:
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
                time.sleep(0.02)


@pytest.mark.privileged
def test_start_prints_the_address_and_detaches_the_daemon(started: Started) -> None:
    address = started.start("c1")
    assert address == to_address(socket_path(started.address, started.namespace, "kettle-pool-0"))
    (pid,) = started.daemons
    assert pid != os.getpid()
    # Detached: its own session, stdio on /dev/null (never containerd's pipes), the socket.
    assert os.getsid(pid) == pid
    for fd in ("0", "1", "2"):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/3").startswith("socket:")
    assert (
        Path(f"/proc/{pid}/status").read_text().split("SigIgn:")[1].split()[0] == "0000000001001000"
    )
    # A second container joins the pool.
    assert started.start("c2") == address
    assert len(started.daemons) == 1
    # SIGTERM: the daemon stops and removes its socket.
    sock = address.removeprefix("unix://")
    assert os.path.exists(sock)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(sock)


@pytest.mark.privileged
def test_full_pools_and_pods_get_other_shims(started: Started) -> None:
    small = {"KETTLE_SHIM_POOL_SIZE": "1"}
    a = started.start("a", env=small)
    b = started.start("b", env=small)
    assert a == to_address(socket_path(started.address, started.namespace, "kettle-pool-0"))
    assert b == to_address(socket_path(started.address, started.namespace, "kettle-pool-1"))
    pod = {"io.kubernetes.cri.sandbox-id": "pod7"}
    p1 = started.start("p1", annotations=pod)
    p2 = started.start("p2", annotations=pod)
    assert p1 == p2 == to_address(socket_path(started.address, started.namespace, "pod7"))
    assert len(started.daemons) == 3
    own = started.start("own", env={"KETTLE_SHIM_GROUPING": "container"})
    assert own == to_address(socket_path(started.address, started.namespace, "own"))


@pytest.mark.privileged
def test_a_stale_socket_is_replaced(started: Started) -> None:
    import socket as socketmod

    path = socket_path(started.address, started.namespace, "kettle-pool-0")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    dead = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # bound, never listening: what a killed shim leaves
    assert started.start("c1") == to_address(path)
    assert len(started.daemons) == 1
