"""Console socket (one SCM_RIGHTS fd, the pty master), --preserve-fds, LISTEN_FDS, fd hygiene."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.support.bundle import Bundle
from tests.support.console import ConsoleSocket, read_master
from tests.support.containers import Containers
from tests.support.probe import parse_json_line
from tests.support.runtime import Runtime

pytestmark = pytest.mark.privileged


def test_console_socket_receives_one_pty_master(
    runtime: Runtime, containers: Containers, tmp_path: Path
) -> None:
    bundle = containers.bundle("/bin/sh", "-c", "echo tty-hello; tty; stty size; sleep 0.3")
    bundle.process["terminal"] = True
    bundle.process["consoleSize"] = {"height": 40, "width": 100}
    console = ConsoleSocket(tmp_path / "console.sock")
    try:
        containers.create(bundle, "--console-socket", str(console.path))
        received = console.wait()
        assert received.connections == 1
        assert len(received.cmsgs) == 1
        level, type_, payload = received.cmsgs[0]
        assert (level, type_) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        assert len(payload) == 4  # exactly one int
        assert len(received.fds) == 1
        assert 0 < len(received.data) < 4096
        master = received.fds[0]
        # The master of a pty: its peer is a /dev/pts slave.
        assert os.readlink(f"/proc/self/fd/{master}") in ("/dev/ptmx", "/dev/pts/ptmx")
        runtime.start(bundle.id)
        out = read_master(master, until=b"40 100")
        assert b"tty-hello" in out
        assert b"/dev/pts/0" in out
        assert b"40 100" in out
        # The container wrote to the pty, not to the runtime's stdout.
        assert "tty-hello" not in (bundle.path / "create.out").read_text()
    finally:
        console.close()


def test_terminal_without_console_socket_fails(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    bundle.process["terminal"] = True
    bundle.write()
    containers.track(bundle.id)
    result = runtime.create(bundle, check=False)
    assert result.returncode != 0


def run_with_fd3(runtime: Runtime, bundle: Bundle, *flags: str, listen: bool = False) -> str:
    """Foreground `run` with a pipe's write end at fd 3 of the runtime; returns what the
    container wrote to it."""
    read_end, write_end = os.pipe()
    env_prefix = "LISTEN_PID=$$ LISTEN_FDS=1 " if listen else ""
    argv = runtime.argv("run", "--bundle", str(bundle.path), *flags, bundle.id)
    # bash, not dash: dash cannot name fds above 9.
    script = f'{env_prefix}exec "$@" 3>&{write_end} {write_end}>&-'
    wrapper = ["/bin/bash", "-c", script, "bash", *argv]
    import subprocess

    try:
        proc = subprocess.run(
            wrapper, pass_fds=[write_end], capture_output=True, text=True, timeout=60
        )
        os.close(write_end)
        write_end = -1
        assert proc.returncode == 0, proc.stderr
        via_fd3 = b""
        while chunk := os.read(read_end, 4096):
            via_fd3 += chunk
        return proc.stdout + "\n--fd3--\n" + via_fd3.decode()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_preserve_fds_passes_fd3(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sh", "-c", "echo via-fd3 >&3; exec /bin/probe")
    bundle.write()
    containers.track(bundle.id)
    stdout, _, fd3 = run_with_fd3(runtime, bundle, "--preserve-fds", "1").partition("\n--fd3--\n")
    assert fd3 == "via-fd3\n"
    assert sorted(map(int, parse_json_line(stdout)["fds"])) == [0, 1, 2, 3]


def test_no_fd_leaks_without_preserve_fds(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/probe")
    bundle.write()
    containers.track(bundle.id)
    stdout, _, fd3 = run_with_fd3(runtime, bundle).partition("\n--fd3--\n")
    assert fd3 == ""
    assert sorted(map(int, parse_json_line(stdout)["fds"])) == [0, 1, 2]


def test_listen_fds_passed(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sh", "-c", "echo via-listen-fd >&3; exec /bin/probe")
    bundle.write()
    containers.track(bundle.id)
    stdout, _, fd3 = run_with_fd3(runtime, bundle, listen=True).partition("\n--fd3--\n")
    assert fd3 == "via-listen-fd\n"
    report = parse_json_line(stdout)
    assert "LISTEN_FDS=1" in report["env"]
    assert 3 in map(int, report["fds"])
