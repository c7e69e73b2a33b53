"""kctl exec, attach and run -i/-t against a real kettled and shims, terminals through ptys."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import termios
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.daemon.conftest import BIN, Image, Kettled, wait_for

pytestmark = pytest.mark.privileged

_DEADLINE_S = 60.0


@pytest.fixture(scope="session")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", image.ref)
    return image.ref


def _name() -> str:
    return f"x-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def running(kettled: Kettled, ref: str) -> Iterator[str]:
    """A detached container that sleeps, removed afterwards."""
    name = _name()
    kettled.ok("run", "-d", "--name", name, "-e", "FROM_RUN=1", ref, "sleep", "1000")
    try:
        yield name
    finally:
        kettled.kctl("rm", "-f", name)


def _status(k: Kettled, name: str) -> str:
    found = json.loads(k.ok("inspect", name))
    return str(found[0]["status"])


def _events(k: Kettled, since_ns: int) -> list[dict[str, object]]:
    res = k.kctl(
        "events", "--since", str(since_ns / 1e9), "--until", str(time.time_ns() / 1e9),
        "--format", "json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


# -- exec ---------------------------------------------------------------------------------------


def test_exec_output_and_exit_code(kettled: Kettled, running: str) -> None:
    res = kettled.kctl("exec", running, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")


def test_exec_env_user_workdir(kettled: Kettled, running: str) -> None:
    script = 'echo "$FROM_RUN $FOO $(pwd) $(id -u):$(id -g)"'
    res = kettled.kctl(
        "exec", "-e", "FOO=bar", "-u", "alice", "-w", "/tmp", running, "sh", "-c", script
    )
    assert (res.returncode, res.stdout) == (0, "1 bar /tmp 1500:1600\n"), res.stderr
    res = kettled.kctl("exec", "-u", "1234:55", running, "id", "-u")
    assert (res.returncode, res.stdout) == (0, "1234\n"), res.stderr


def test_exec_missing_binary_is_127_with_one_line(kettled: Kettled, running: str) -> None:
    res = kettled.kctl("exec", running, "no-such-binary")
    assert res.returncode == 127, res
    assert res.stderr.startswith("kctl: ") and res.stderr.count("\n") == 1, res.stderr
    assert "no-such-binary" in res.stderr
    res = kettled.kctl("exec", running, "/etc/passwd")
    assert res.returncode == 126, res
    assert res.stderr.startswith("kctl: ") and res.stderr.count("\n") == 1, res.stderr


def test_exec_unknown_user_is_a_clear_error(kettled: Kettled, running: str) -> None:
    res = kettled.kctl("exec", "-u", "nobody-here", running, "true")
    assert res.returncode != 0
    assert res.stderr.startswith("kctl: ") and "nobody-here" in res.stderr, res.stderr


def test_exec_detached_runs_on(kettled: Kettled, running: str) -> None:
    res = kettled.kctl("exec", "-d", running, "sh", "-c", "sleep 0.2; touch /tmp/detached-done")
    assert (res.returncode, res.stdout) == (0, ""), res.stderr
    wait_for(
        lambda: kettled.kctl("exec", running, "test", "-e", "/tmp/detached-done").returncode == 0,
        "the detached exec's file",
    )


def test_exec_into_stopped_or_unknown_container_errors(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("create", "--name", name, ref, "true")
    try:
        res = kettled.kctl("exec", name, "true")
        assert res.returncode == 1
        assert res.stderr.startswith("kctl: ") and "not running" in res.stderr, res.stderr
    finally:
        kettled.ok("rm", "-f", name)
    res = kettled.kctl("exec", name, "true")
    assert res.returncode == 1 and "no such container" in res.stderr, res.stderr


def test_exec_stdin_piped(kettled: Kettled, running: str) -> None:
    proc = subprocess.run(
        [str(BIN / "kctl"), "--address", kettled.address, "exec", "-i", running, "cat"],
        input="hi\nthere\n", capture_output=True, text=True, timeout=_DEADLINE_S, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "hi\nthere\n"), proc.stderr
    big = os.urandom(300_000).hex()  # more than a pipe and a fifo hold together
    proc = subprocess.run(
        [str(BIN / "kctl"), "--address", kettled.address, "exec", "-i", running, "wc", "-c"],
        input=big, capture_output=True, text=True, timeout=_DEADLINE_S, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout.strip()) == (0, str(len(big))), proc.stderr


def test_exec_events_and_nothing_left_in_the_bundle(kettled: Kettled, running: str) -> None:
    since = time.time_ns()
    kettled.ok("exec", running, "true")
    cid = json.loads(kettled.ok("inspect", running))[0]["id"]
    actions = [e["action"] for e in _events(kettled, since) if e.get("id") == cid]
    execs = [a for a in actions if str(a).startswith("exec_")]
    assert execs == ["exec_create", "exec_start", "exec_die"]
    execdir = kettled.state / kettled.namespace / cid / "exec"
    wait_for(lambda: not execdir.exists() or not any(execdir.iterdir()), "exec fifos removed")


# -- terminals ----------------------------------------------------------------------------------


class Pty:
    """kctl running on a pty of ours (the test plays the terminal)."""

    def __init__(self, argv: list[str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = pty.openpty()
        _set_size(slave, rows, cols)
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: _controlling(0),
        )  # fmt: skip
        os.close(slave)
        self.buf = b""

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, needle: bytes, timeout: float = _DEADLINE_S) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {needle!r}; got {self.buf!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"pty closed waiting for {needle!r}; got {self.buf!r}")
                self.buf += chunk
        return self.buf

    def resize(self, rows: int, cols: int) -> None:
        _set_size(self.master, rows, cols)
        os.killpg(self.proc.pid, signal.SIGWINCH)

    def wait(self, timeout: float = _DEADLINE_S) -> int:
        # Keep reading so that kctl never blocks on a full pty.
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"kctl did not exit; output {self.buf!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    self.buf += os.read(self.master, 65536)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def _controlling(fd: int) -> None:
    import fcntl

    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


def _set_size(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _kctl(k: Kettled, *args: str) -> list[str]:
    return [str(BIN / "kctl"), "--address", k.address, *args]


def test_exec_tty_is_a_pty_and_follows_resizes(kettled: Kettled, running: str) -> None:
    res = kettled.kctl("exec", "-t", running, "tty")
    assert res.returncode == 0 and res.stdout.startswith("/dev/pts/"), res
    t = Pty(_kctl(kettled, "exec", "-it", running, "sh"), rows=30, cols=100)
    try:
        t.write(b"stty size; echo mark-$((6*7))\r")
        t.expect(b"30 100")
        t.expect(b"mark-42")
        t.resize(40, 120)
        # The resize travels kctl -> kettled -> shim asynchronously: ask until it shows.
        deadline = time.monotonic() + _DEADLINE_S
        while b"40 120" not in t.buf:
            assert time.monotonic() < deadline, t.buf
            t.write(b"stty size\r")
            with contextlib.suppress(AssertionError):
                t.expect(b"40 120", timeout=1)
        t.write(b"exit 5\r")
        assert t.wait() == 5
    finally:
        t.close()


def test_run_it_and_the_detach_keys(kettled: Kettled, ref: str) -> None:
    name = _name()
    t = Pty(_kctl(kettled, "run", "-it", "--name", name, ref, "sh"))
    try:
        t.expect(b"# ")  # the shell's prompt: nothing was lost before the attach
        t.write(b"tty; echo hello-$((1+1))\r")
        t.expect(b"/dev/pts/")
        t.expect(b"hello-2")
        t.write(b"\x10\x11")  # ctrl-p ctrl-q
        assert t.wait() == 0
        assert _status(kettled, name) == "running"
        # Attach again: the shell still reads its terminal.
        a = Pty(_kctl(kettled, "attach", name))
        try:
            a.write(b"echo again-$((2+3))\r")
            a.expect(b"again-5")
            a.write(b"exit 4\r")
            assert a.wait() == 4
        finally:
            a.close()
    finally:
        t.close()
        kettled.kctl("rm", "-f", name)


def test_run_it_rm_exit_code_and_removal(kettled: Kettled, ref: str) -> None:
    name = _name()
    t = Pty(_kctl(kettled, "run", "--rm", "-it", "--name", name, ref, "sh", "-c", "exit 9"))
    try:
        assert t.wait() == 9
    finally:
        t.close()
    wait_for(lambda: kettled.kctl("inspect", name).returncode != 0, "the --rm container gone")


def test_exec_it_detach_keys_leave_the_process_running(kettled: Kettled, running: str) -> None:
    t = Pty(_kctl(kettled, "exec", "-it", "--detach-keys", "ctrl-a,x", running, "sh"))
    try:
        t.expect(b"# ")
        t.write(b"echo $((40+2)) > /tmp/from-exec; sleep 1000\r")
        wait_for(
            lambda: kettled.kctl("exec", running, "cat", "/tmp/from-exec").stdout == "42\n",
            "the interactive exec's file",
        )
        t.write(b"\x01x")
        assert t.wait() == 0
        assert b"read escape sequence" in t.buf
    finally:
        t.close()
    ps = kettled.ok("exec", running, "ps")
    # pid 1's sleep and the detached exec's
    assert sum("sleep 1000" in line for line in ps.splitlines()) == 2, ps


def test_run_missing_command_is_127(kettled: Kettled, ref: str) -> None:
    name = _name()
    for flags in ((), ("-i",)):
        res = kettled.kctl("run", "--rm", *flags, "--name", name, ref, "no-such-command")
        assert res.returncode == 127, res
        assert res.stderr.startswith("kctl: ") and res.stderr.count("\n") == 1, res.stderr
        assert kettled.kctl("inspect", name).returncode != 0  # --rm removed it


def test_run_i_pipes_stdin_and_closes_it(kettled: Kettled, ref: str) -> None:
    proc = subprocess.run(
        _kctl(kettled, "run", "--rm", "-i", ref, "sh", "-c", "cat; echo done >&2; exit 2"),
        input="one\ntwo\n", capture_output=True, text=True, timeout=_DEADLINE_S, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "one\ntwo\n", "done\n")


def test_run_forwards_signals(kettled: Kettled, ref: str) -> None:
    name = _name()
    script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"
    proc = subprocess.Popen(
        _kctl(kettled, "run", "--rm", "--name", name, ref, "sh", "-c", script),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=_DEADLINE_S)
        assert (proc.returncode, out) == (7, "got-term\n"), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kettled.kctl("rm", "-f", name)


# -- attach -------------------------------------------------------------------------------------


def test_attach_output_stdin_and_two_attachers(kettled: Kettled, ref: str) -> None:
    name = _name()
    script = 'echo started; while read line; do echo "got $line"; done; echo eof'
    kettled.ok("run", "-d", "-i", "--name", name, ref, "sh", "-c", script)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    _kctl(kettled, "attach", name),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        first, second = procs
        assert first.stdin is not None and first.stdout is not None
        assert second.stdout is not None
        # Both are attached once a line sent through the first comes back to both.
        deadline = time.monotonic() + _DEADLINE_S
        seen = {id(p): b"" for p in procs}
        n = 0
        while not all(b"got ping" in v for v in seen.values()):
            assert time.monotonic() < deadline, seen
            n += 1
            first.stdin.write(f"ping{n}\n".encode())
            first.stdin.flush()
            for p in procs:
                assert p.stdout is not None
                if select.select([p.stdout], [], [], 0.2)[0]:
                    seen[id(p)] += os.read(p.stdout.fileno(), 65536)
        # The end of an attacher's input leaves the container's stdin open (no stdin_once).
        first.stdin.close()
        first.stdin = None  # communicate() below must not flush it
        kettled.ok("exec", name, "true")
        assert _status(kettled, name) == "running"
        # Output already sent is not replayed: attach shows output from now on.
        late = subprocess.Popen(
            _kctl(kettled, "attach", "--no-stdin", name), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(late)
        assert second.stdin is not None and late.stdout is not None
        late_out = b""
        deadline = time.monotonic() + _DEADLINE_S
        while b"got late" not in late_out:  # sent through the second attacher
            assert time.monotonic() < deadline, late_out
            n += 1
            second.stdin.write(f"late{n}\n".encode())
            second.stdin.flush()
            if select.select([late.stdout], [], [], 0.2)[0]:
                late_out += os.read(late.stdout.fileno(), 65536)
        assert b"started" not in late_out and b"ping" not in late_out
        kettled.ok("kill", name)
        for p in procs:
            out, err = p.communicate(timeout=_DEADLINE_S)
            assert p.returncode == 137, (out, err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        kettled.kctl("rm", "-f", name)


def test_attach_to_a_stopped_container_errors(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "--name", name, ref, "true")
    try:
        res = kettled.kctl("attach", name)
        assert res.returncode == 1
        assert res.stderr.startswith("kctl: ") and "start it first" in res.stderr, res.stderr
    finally:
        kettled.ok("rm", "-f", name)


def test_resize_of_the_main_tty(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "-d", "-t", "--name", name, ref, "sleep", "1000")
    try:
        from kettle.api import kettle_pb as pb
        from kettle.cli.client import Client

        client = Client(kettled.address)
        try:
            size = pb.WindowSize(width=123, height=45)
            client.call("ResizeContainer", pb.ExecConfig(id=name, size=size), pb.Empty)
        finally:
            client.close()
        res = kettled.kctl("exec", name, "sh", "-c", "stty size < /proc/1/fd/0")
        assert (res.returncode, res.stdout) == (0, "45 123\n"), res.stderr
    finally:
        kettled.kctl("rm", "-f", name)


# -- run_exec (what health checks call) ---------------------------------------------------------


class _Containers:
    """What run_exec uses of kettle.daemon.containers.Containers, over the test kettled's own
    store and bundles (the exec goes through the container's real shim)."""

    def __init__(self, k: Kettled) -> None:
        from kettle.daemon.store import Store

        self.k = k
        self.namespace = k.namespace
        self.store = Store(str(k.root / "kettled.db"))
        self.events: list[str] = []

    def bundle(self, cid: str) -> str:
        return str(self.k.state / self.k.namespace / cid)

    def _running(self, ref: str) -> tuple[object, None]:
        rec = self.store.find(ref)
        assert rec.status == "running"
        return rec, None

    def publish(self, _rec: object, action: str, **_attrs: str) -> None:
        self.events.append(action)


def test_run_exec_captures_kills_on_timeout_and_caps_output(kettled: Kettled, running: str) -> None:
    from kettle.daemon import execs

    fake = _Containers(kettled)
    try:
        cid = fake.store.find(running).id
        c: object = fake

        def run(args: list[str], timeout: float, **kw: int) -> tuple[int, bytes]:
            return execs.run_exec(c, cid, args, timeout, **kw)  # type: ignore[arg-type]

        code, out = run(["sh", "-c", "echo out; echo err >&2; exit 3"], 60)
        assert (code, sorted(out.splitlines())) == (3, [b"err", b"out"])
        assert fake.events == ["exec_create", "exec_start", "exec_die"]
        code, out = run(["sh", "-c", "echo started; exec sleep 1000"], 1.0)
        assert (code, out) == (execs.TIMEOUT_EXIT, b"started\n")
        code, out = run(["no-such-binary"], 60)
        assert code == 127 and b"no-such-binary" in out
        code, out = run(["sh", "-c", "yes | head -c 100000"], 60, max_output=10)
        assert (code, out) == (0, b"y\n" * 5)
    finally:
        fake.store.close()


# -- detach keys (pure) -------------------------------------------------------------------------


def test_detach_keys_parse_and_match() -> None:
    from kettle.cli.terminal import DetachMatcher, parse_detach_keys
    from kettle.errors import InvalidArgument

    assert parse_detach_keys("") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x,ctrl-@,ctrl-_") == b"\x01x\x00\x1f"
    with pytest.raises(InvalidArgument, match="ctrl-1"):
        parse_detach_keys("ctrl-1")
    m = DetachMatcher(b"\x10\x11")
    assert m.feed(b"ab\x10") == (b"ab", False)  # a partial match is held back
    assert m.feed(b"c") == (b"\x10c", False)  # and passed on once the sequence breaks
    assert m.feed(b"\x10\x10") == (b"\x10", False)
    assert m.feed(b"\x11rest") == (b"", True)


def test_hub_fans_out_and_lets_go() -> None:
    from kettle.daemon import stdio

    key = f"/nonexistent/{uuid.uuid4().hex}"
    ended = stdio.attach(key, wait_for_start=False)  # nothing runs: over at once
    assert ended.get(timeout=5) is None
    ended.close()
    assert key not in stdio._hubs
    early = stdio.attach(key, wait_for_start=True)  # a created container: its next run
    run = stdio._acquire(key)
    run.run_started()
    late = stdio.attach(key, wait_for_start=False)
    run.publish("stdout", b"out")
    for a in (early, late):
        assert a.get(timeout=5) == ("stdout", b"out")
    late.close()
    run.publish("stderr", b"err")
    assert early.get(timeout=5) == ("stderr", b"err")
    run.run_ended()
    assert early.get(timeout=5) is None
    early.close()
    stdio._release(run)
    assert key not in stdio._hubs


def test_a_resize_that_cannot_apply_does_not_stop_the_input_behind_it(
    kettled: Kettled, running: str
) -> None:
    # Through the API: kctl never sends a size for an exec without a tty, kettled refuses it.
    code = f"""
import sys
from kettle.api import kettle_pb as pb
from kettle.cli.client import Client
c = Client({kettled.address!r})
cfg = pb.ExecConfig(id={running!r}, args=["sh", "-c", "read line; echo got-$line"], stdin=True)
s = c.bidi("Exec", pb.IOInput(config=cfg), pb.IOOutput)
s.send(pb.IOInput(resize=pb.WindowSize(width=80, height=24)))
s.send(pb.IOInput(stdin=b"hello\\n"))
for m in s:
    sys.stdout.write(m.data.decode())
    if m.exited:
        print("exit", m.exit_code)
        break
"""
    res = subprocess.run(
        [str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "got-hello\nexit 0\n"
