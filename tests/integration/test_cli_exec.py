"""exec: args and --process, --detach/--pid-file, --env/--cwd/--user/--cap, --tty."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support import leaks
from tests.support.console import ConsoleSocket, read_master
from tests.support.containers import Containers
from tests.support.probe import caps_from_mask, parse_json_line
from tests.support.runtime import Runtime

pytestmark = pytest.mark.privileged


@pytest.fixture
def running(containers: Containers) -> tuple[str, int]:
    bundle = containers.bundle("/bin/sleep", "600")
    bundle.add_tmp()
    state = containers.start(bundle)
    return bundle.id, state["pid"]


def test_exec_args_output_and_exit_code(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    assert runtime("exec", cid, "/bin/echo", "hi", "there").stdout == "hi there\n"
    result = runtime("exec", cid, "/bin/sh", "-c", "exit 5", check=False)
    assert result.returncode == 5


def test_exec_joins_container_namespaces(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, pid = running
    report = parse_json_line(runtime("exec", cid, "/bin/probe").stdout)
    for ns in ("pid", "mnt", "net", "ipc", "uts"):
        assert report["ns"][ns] == Path(f"/proc/{pid}/ns/{ns}").stat().st_ino, ns
    assert report["pid"] > 1  # inside the container's pid namespace, not its init


def test_exec_process_file(runtime: Runtime, running: tuple[str, int], tmp_path: Path) -> None:
    cid, _ = running
    process = {
        "terminal": False,
        "user": {"uid": 1, "gid": 1, "additionalGids": [5]},
        "args": ["/bin/probe"],
        "env": ["PATH=/bin", "KETTLE_TEST=process-file"],
        "cwd": "/tmp",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": [], "permitted": []},
        "noNewPrivileges": True,
    }
    spec = tmp_path / "process.json"
    spec.write_text(json.dumps(process))
    report = parse_json_line(runtime("exec", "--process", str(spec), cid).stdout)
    assert (report["uid"], report["gid"]) == (1, 1)
    assert 5 in report["groups"]
    assert "KETTLE_TEST=process-file" in report["env"]
    assert report["cwd"] == "/tmp"
    assert caps_from_mask(report["CapBnd"]) == {"CAP_KILL"}
    assert caps_from_mask(report["CapEff"]) == set()
    assert report["NoNewPrivs"] == "1"


def test_exec_env_cwd_user_flags(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    out = runtime(
        "exec",
        "--env",
        "A=1",
        "--env",
        "B=two",
        "--cwd",
        "/bin",
        "--user",
        "2:3",
        cid,
        "/bin/probe",
    ).stdout
    report = parse_json_line(out)
    assert {"A=1", "B=two"} <= set(report["env"])
    assert report["cwd"] == "/bin"
    assert (report["uid"], report["gid"]) == (2, 3)


def test_exec_cap_flag(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    report = parse_json_line(runtime("exec", "--cap", "CAP_SYS_ADMIN", cid, "/bin/probe").stdout)
    assert "CAP_SYS_ADMIN" in caps_from_mask(report["CapEff"])
    plain = parse_json_line(runtime("exec", cid, "/bin/probe").stdout)
    assert "CAP_SYS_ADMIN" not in caps_from_mask(plain["CapEff"])


def test_exec_detach_pid_file(
    runtime: Runtime, containers: Containers, running: tuple[str, int], tmp_path: Path
) -> None:
    cid, init = running
    pid_file = tmp_path / "exec.pid"
    runtime(
        "exec",
        "--detach",
        "--pid-file",
        str(pid_file),
        cid,
        "/bin/sleep",
        "600",
        output=tmp_path / "exec.out",
    )
    pid = int(pid_file.read_text())
    containers.track(cid, pid)
    assert leaks.alive(pid)
    assert Path(f"/proc/{pid}/ns/pid").stat().st_ino == Path(f"/proc/{init}/ns/pid").stat().st_ino
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"/bin/sleep\x00600\x00"
    assert pid in json.loads(runtime("ps", "--format", "json", cid).stdout)


def test_exec_in_stopped_container_fails(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    containers.start(bundle)
    runtime.wait_status(bundle.id, "stopped")
    assert runtime("exec", bundle.id, "/bin/true", check=False).returncode != 0


def test_exec_missing_binary_fails(runtime: Runtime, running: tuple[str, int]) -> None:
    cid, _ = running
    result = runtime("exec", cid, "/no/such/binary", check=False)
    assert result.returncode != 0
    assert runtime.state(cid)["status"] == "running"


def test_exec_tty_console_socket(
    runtime: Runtime, containers: Containers, running: tuple[str, int], tmp_path: Path
) -> None:
    cid, _ = running
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        runtime(
            "exec",
            "--tty",
            "--detach",
            "--console-socket",
            str(console.path),
            "--pid-file",
            str(tmp_path / "pid"),
            cid,
            "/bin/sh",
            "-c",
            "echo exec-tty-ok; tty; sleep 0.5",
            output=tmp_path / "exec.out",
        )
        containers.track(cid, int((tmp_path / "pid").read_text()))
        received = console.wait()
        assert len(received.fds) == 1
        out = read_master(received.fds[0])
        assert b"exec-tty-ok" in out
        assert b"/dev/pts/" in out
        # Nothing went to the runtime's own stdout.
        assert (tmp_path / "exec.out").read_text() == ""
    finally:
        console.close()


def test_exec_does_not_wait_for_detached_children(
    runtime: Runtime, running: tuple[str, int]
) -> None:
    # A foreground exec returns when its process exits, even if that left a background child.
    cid, _ = running
    started = time.monotonic()
    result = runtime("exec", cid, "/bin/sh", "-c", "sleep 30 >/dev/null 2>&1 & echo bg", timeout=25)
    assert result.stdout == "bg\n"
    assert time.monotonic() - started < 25
