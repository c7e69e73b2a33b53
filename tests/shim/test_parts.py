"""The shim's parts on their own: metrics conversion, the reaper, stdio pumps and fifos, the
event publisher, the runc-compatible backend's invocations and errors, and `shim delete`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kettle import errors
from kettle.proto import (
    cgroups_v1_pb,
    cgroups_v2_pb,
    empty_pb,
    events_pb,
    events_service_pb,
    task_pb,
    wkt,
)
from kettle.shim import metrics
from kettle.shim.backend.binary import BinaryBackend, last_error, runtime_error
from kettle.shim.config import ShimConfig
from kettle.shim.events import Publisher
from kettle.shim.ioloop import IoLoop, Pump
from kettle.shim.reaper import Reaper, exit_status
from kettle.shim.stdio import ProcessIO
from kettle.ttrpc import Context, Server

# -- metrics ---------------------------------------------------------------------------------

RUNC_V1_STATS = {
    "cpu": {
        "usage": {"total": 123, "percpu": [100, 23], "kernel": 20, "user": 100},
        "throttling": {"periods": 5, "throttledPeriods": 2, "throttledTime": 99},
    },
    "memory": {
        "cache": 4096,
        "usage": {"limit": 1 << 24, "usage": 3 << 20, "max": 4 << 20, "failcnt": 1},
        "swap": {"limit": 1 << 25, "usage": 3 << 20},
        "kernel": {"usage": 1},
        "kernelTCP": {},
        "raw": {"rss": 777, "pgfault": 12, "total_rss": 778, "hierarchical_memsw_limit": 9},
    },
    "pids": {"current": 3, "limit": 10},
    "blkio": {"ioServiceBytesRecursive": [{"major": 8, "minor": 0, "op": "Read", "value": 512}]},
    "hugetlb": {"2MB": {"usage": 2, "max": 4, "failcnt": 1}},
}


def test_v1_metrics_from_runc_stats() -> None:
    packed = metrics.pack(RUNC_V1_STATS, cgroup_v2=False, oom_kills=2)
    assert packed.type_url == "io.containerd.cgroups.v1.Metrics"
    m = wkt.unpack_any(packed, cgroups_v1_pb.Metrics)
    assert m.cpu is not None and m.cpu.usage is not None and m.cpu.throttling is not None
    assert (m.cpu.usage.total, list(m.cpu.usage.per_cpu), m.cpu.usage.kernel) == (
        123,
        [100, 23],
        20,
    )
    assert m.cpu.throttling.throttled_periods == 2
    assert m.memory is not None and m.memory.usage is not None
    assert (m.memory.cache, m.memory.rss, m.memory.total_rss, m.memory.pg_fault) == (
        4096,
        777,
        778,
        12,
    )
    assert m.memory.hierarchical_swap_limit == 9
    assert (m.memory.usage.limit, m.memory.usage.usage, m.memory.usage.failcnt) == (
        1 << 24,
        3 << 20,
        1,
    )
    assert m.pids is not None and (m.pids.current, m.pids.limit) == (3, 10)
    assert m.blkio is not None
    (entry,) = m.blkio.io_service_bytes_recursive
    assert (entry.major, entry.op, entry.value) == (8, "Read", 512)
    (huge,) = m.hugetlb
    assert (huge.pagesize, huge.usage, huge.failcnt) == ("2MB", 2, 1)
    assert m.memory_oom_control is not None and m.memory_oom_control.oom_kill == 2


def test_v2_metrics_from_runc_stats() -> None:
    stats = {
        "cpu": {"usage": {"total": 5_000_000, "kernel": 1_000_000, "user": 4_000_000}},
        "memory": {
            "usage": {"limit": 1 << 24, "usage": 1 << 20, "max": 2 << 20},
            "swap": {"limit": (1 << 24) + (1 << 23), "usage": (1 << 20) + 4096},
            "raw": {"anon": 11, "file": 22, "pgmajfault": 3},
        },
        "pids": {"current": 2},
        "blkio": {
            "ioServiceBytesRecursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 10},
                {"major": 8, "minor": 0, "op": "Write", "value": 20},
            ],
            "ioServicedRecursive": [{"major": 8, "minor": 0, "op": "Read", "value": 1}],
        },
    }
    m = wkt.unpack_any(metrics.pack(stats, cgroup_v2=True), cgroups_v2_pb.Metrics)
    assert m.cpu is not None and (m.cpu.usage_usec, m.cpu.system_usec, m.cpu.user_usec) == (
        5000,
        1000,
        4000,
    )
    assert m.memory is not None
    assert (m.memory.anon, m.memory.file, m.memory.pgmajfault) == (11, 22, 3)
    assert (m.memory.usage, m.memory.usage_limit, m.memory.max_usage) == (1 << 20, 1 << 24, 2 << 20)
    # runc's swap figures are memory+swap; containerd's v2 metrics are swap alone.
    assert (m.memory.swap_usage, m.memory.swap_limit) == (4096, 1 << 23)
    assert m.io is not None
    (io,) = m.io.usage
    assert (io.major, io.rbytes, io.wbytes, io.rios) == (8, 10, 20, 1)
    assert m.memory_events is None


def test_metrics_tolerate_missing_controllers() -> None:
    m = wkt.unpack_any(metrics.pack({}, cgroup_v2=False), cgroups_v1_pb.Metrics)
    assert m.pids is not None and m.pids.current == 0


# -- reaper ----------------------------------------------------------------------------------


def _child(code: int | None = None, sig: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        if sig is not None:
            os.kill(os.getpid(), sig)
        os._exit(code or 0)
    return pid


def test_exit_status_convention() -> None:
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGKILL) == 137


def test_reaper_routes_exits_and_respects_holds() -> None:
    kicks: list[int] = []
    reaper = Reaper(kick=lambda: kicks.append(1))
    got: dict[int, int] = {}
    with reaper.hold():
        a = _child(code=5)
        b = _child(sig=signal.SIGTERM)
        reaper.watch(a, lambda s: got.__setitem__(a, s))
        reaper.watch(b, lambda s: got.__setitem__(b, s))
        time.sleep(0.2)
        reaper.reap()  # held: must not reap
        assert got == {} and kicks == []
    assert kicks == [1]  # the release asks for the pass that was skipped
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        reaper.reap()
        time.sleep(0.01)
    assert got == {a: 5, b: 128 + signal.SIGTERM}


# -- io loop and stdio ------------------------------------------------------------------------


@pytest.fixture
def loop() -> IoLoop:
    return IoLoop()


def _read_all(fd: int, timeout: float = 5) -> bytes:
    os.set_blocking(fd, True)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def test_pump_copies_to_eof_with_backpressure(loop: IoLoop) -> None:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    done = threading.Event()
    Pump(loop, src_r, dst_w, on_done=done.set).start()
    payload = os.urandom(1 << 20)  # 16 pipe buffers: the sink fills up many times

    def writer() -> None:
        _write_all(src_w, payload)
        os.close(src_w)

    t = threading.Thread(target=writer)
    t.start()
    assert _read_all(dst_r) == payload
    t.join(5)
    assert done.wait(5)
    os.close(dst_r)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def test_pump_finish_passes_on_what_was_written(loop: IoLoop) -> None:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    pump = Pump(loop, src_r, dst_w)
    pump.start()
    os.write(src_w, b"last words")
    pump.finish()  # CloseIO while the client still holds its end open
    assert _read_all(dst_r) == b"last words"
    assert pump.done.wait(5)
    os.close(src_w)
    os.close(dst_r)


def _fifo(tmp: Path, name: str) -> str:
    path = tmp / name
    os.mkfifo(path)
    return str(path)


def test_output_fifos_go_to_the_process_and_never_break(tmp_path: Path, loop: IoLoop) -> None:
    out = _fifo(tmp_path, "out")
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    io = ProcessIO(loop, Reaper(), stdin="", stdout=out, stderr=out, terminal=False)
    io.open()
    w1, w2 = io.child[1], io.child[2]
    assert w1 is not None and w2 is not None and io.child[0] is None
    assert stat.S_ISFIFO(os.fstat(w1).st_mode)
    assert os.get_blocking(w1)  # the container gets an ordinary blocking stdout
    # A copy for the "container", then the shim lets go of its own.
    proc_out = os.dup(w1)
    io.started()
    assert io.child == [None, None, None]
    os.write(proc_out, b"hello\n")
    assert os.read(reader, 100) == b"hello\n"
    os.close(reader)  # the client went away (ctr run -d) ...
    os.write(proc_out, b"still fine\n")  # ... and the container's write does not fail
    os.close(proc_out)
    io.close()


def test_stdin_goes_through_a_pipe_until_close_io(tmp_path: Path, loop: IoLoop) -> None:
    fifo = _fifo(tmp_path, "in")
    io = ProcessIO(loop, Reaper(), stdin=fifo, stdout="", stderr="", terminal=False)
    io.open()
    child_in = os.dup(io.child[0])  # type: ignore[arg-type]
    io.started()
    client = os.open(fifo, os.O_WRONLY)
    os.write(client, b"some input")
    io.close_stdin()
    assert _read_all(child_in) == b"some input"
    os.close(client)
    os.close(child_in)
    io.close()


def test_stdin_eof_from_the_client(tmp_path: Path, loop: IoLoop) -> None:
    fifo = _fifo(tmp_path, "in")
    io = ProcessIO(loop, Reaper(), stdin=fifo, stdout="", stderr="", terminal=False)
    io.open()
    child_in = os.dup(io.child[0])  # type: ignore[arg-type]
    io.started()
    time.sleep(0.1)  # no writer yet: the process must not see EOF
    os.set_blocking(child_in, False)
    with pytest.raises(BlockingIOError):
        os.read(child_in, 10)
    client = os.open(fifo, os.O_WRONLY)
    os.write(client, b"abc")
    os.close(client)
    assert _read_all(child_in) == b"abc"
    os.close(child_in)
    io.close()


def test_file_uri_and_bad_uris(tmp_path: Path, loop: IoLoop) -> None:
    log = tmp_path / "sub" / "log.txt"
    io = ProcessIO(
        loop, Reaper(), stdin="", stdout=f"file://{log}", stderr=f"file://{log}", terminal=False
    )
    io.open()
    os.write(io.child[1], b"one\n")  # type: ignore[arg-type]
    os.write(io.child[2], b"two\n")  # type: ignore[arg-type]
    io.close()
    assert log.read_text() == "one\ntwo\n"
    with pytest.raises(errors.InvalidArgument, match="scheme"):
        ProcessIO(loop, Reaper(), stdin="", stdout="tcp://x", stderr="", terminal=False).open()
    with pytest.raises(errors.InvalidArgument, match="stderr"):
        ProcessIO(loop, Reaper(), stdin="", stdout="", stderr="/x", terminal=True).open()


def test_terminal_master_arrives_on_the_console_socket(tmp_path: Path, loop: IoLoop) -> None:
    import array
    import socket

    out = _fifo(tmp_path, "out")
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    io = ProcessIO(loop, Reaper(), stdin="", stdout=out, stderr="", terminal=True)
    io.open()
    assert io.console_socket is not None
    master, slave = os.openpty()
    # What a runtime does: one message, one fd.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(io.console_socket)
        s.sendmsg(
            [b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))]
        )
    os.close(master)
    io.started()
    assert not os.path.exists(os.path.dirname(io.console_socket or "/x/y") or "/nonexistent")
    io.resize(100, 40)
    import fcntl
    import struct
    import termios

    rows, cols = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    assert (rows, cols) == (40, 100)
    os.write(slave, b"on the tty\n")
    os.close(slave)  # the container exits: EIO on the master ends the copy
    io.wait_output(5)
    assert io.output_done()
    os.set_blocking(reader, True)
    assert b"on the tty" in os.read(reader, 100)
    os.close(reader)
    io.close()


# -- events ------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.envelopes: list[events_service_pb.ForwardRequest] = []
        self.fail = 0

    def forward(self, req: events_service_pb.ForwardRequest, ctx: Context) -> empty_pb.Empty:
        if self.fail:
            self.fail -= 1
            raise errors.Unavailable("not now")
        self.envelopes.append(req)
        return empty_pb.Empty()


@pytest.fixture
def events_server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    srv = Server(log=lambda line: None)
    srv.register_service(events_service_pb.EVENTS_SERVICE, rec)
    address = f"@kettle-shim-events-{id(rec)}"
    srv.listen(address)
    srv.start()
    yield address, rec
    srv.shutdown()


def test_publisher_forwards_in_order_and_retries(events_server: tuple[str, Recorder]) -> None:
    address, rec = events_server
    rec.fail = 2
    pub = Publisher("ns1", address)
    pub.publish(events_pb.TaskStart(container_id="c", pid=1))
    pub.publish(events_pb.TaskExit(container_id="c", id="c", exit_status=3))
    pub.publish(events_pb.TaskOOM(container_id="c"))
    assert pub.flush(10)
    topics = [r.envelope.topic for r in rec.envelopes if r.envelope is not None]
    assert topics == ["/tasks/start", "/tasks/exit", "/tasks/oom"]
    env = rec.envelopes[1].envelope
    assert env is not None and env.namespace == "ns1" and env.event is not None
    assert env.event.type_url == "containerd.events.TaskExit"
    assert wkt.unpack_any(env.event, events_pb.TaskExit).exit_status == 3


def test_publisher_falls_back_to_the_publish_binary(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    fake = tmp_path / "containerd"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {record}\ncat >> {record}.stdin\n')
    fake.chmod(0o755)
    pub = Publisher("ns2", "@kettle-nobody-listens-here", "/run/c.sock", str(fake), Reaper())
    pub.publish(events_pb.TaskOOM(container_id="c9"))
    assert pub.flush(30)
    assert record.read_text().split() == [
        "--address",
        "/run/c.sock",
        "publish",
        "--topic",
        "/tasks/oom",
        "--namespace",
        "ns2",
    ]
    from kettle.proto.any_pb import Any

    sent = Any.decode((tmp_path / "calls.stdin").read_bytes())
    assert wkt.unpack_any(sent, events_pb.TaskOOM).container_id == "c9"


# -- runc-compatible binary backend -------------------------------------------------------------


def test_last_error_and_its_class() -> None:
    log = "\n".join(
        [
            '{"level":"info","msg":"starting"}',
            '{"level":"error","msg":"first"}',
            "not json",
            '{"level":"error","msg":"container \\"x\\" does not exist"}',
        ]
    )
    assert last_error(log) == 'container "x" does not exist'
    assert isinstance(runtime_error("kill", "x", "container does not exist"), errors.NotFound)
    assert isinstance(
        runtime_error("kill", "x", "container not running"), errors.FailedPrecondition
    )
    assert type(runtime_error("create", "x", "boom")) is errors.KettleError


FAKE_RUNTIME = """#!/bin/sh
# Records argv (and stdin for update); answers like runc.
echo "$*" >> {record}
for a in "$@"; do last="$a"; done
case "$*" in
  *" ps --format json "*) echo "[10,11]" ;;
  *" events --stats "*) echo '{{"type":"stats","id":"c","data":{{"pids":{{"current":2}}}}}}' ;;
  *" update --resources - "*) cat >> {record}; echo >> {record} ;;
  *" create "*|*" exec "*)
     pidfile=$(echo "$*" | sed 's/.*--pid-file \\([^ ]*\\).*/\\1/'); echo 4242 > "$pidfile" ;;
  *" kill "*) echo '{{"level":"error","msg":"container not running"}}' >> {log}; exit 1 ;;
  *" delete "*) echo '{{"level":"error","msg":"container does not exist"}}' >> {log}; exit 1 ;;
esac
"""


def test_binary_backend_speaks_go_runc(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    record = tmp_path / "argv"
    fake = tmp_path / "fake-runc"
    fake.write_text(FAKE_RUNTIME.format(record=record, log=bundle / "log.json"))
    fake.chmod(0o755)
    cfg = ShimConfig()
    cfg.binary_name = str(fake)
    cfg.no_pivot_root = True
    b = BinaryBackend(cfg, "/run/containerd/runc/ns", Reaper(), str(bundle))
    g = f"--root /run/containerd/runc/ns --log {bundle}/log.json --log-format json"
    assert b.create("c", str(bundle), [None, None, None], None) == 4242
    b.start("c")
    assert b.pids("c") == [10, 11]
    assert b.stats("c") == {"pids": {"current": 2}}
    b.update("c", {"pids": {"limit": 5}})
    assert (
        b.exec("c", "e1", str(bundle), {"args": ["true"]}, [None, None, None], "/tmp/p.sock")
        == 4242
    )
    b.pause("c")
    b.resume("c")
    with pytest.raises(errors.NotFound, match="not running"):
        b.kill("c", 9, True)
    b.delete("c", True)  # "does not exist" is success for delete
    lines = record.read_text().splitlines()
    assert lines[0] == f"{g} create --bundle {bundle} --pid-file {bundle}/init.pid --no-pivot c"
    assert lines[1] == f"{g} start c"
    assert lines[2] == f"{g} ps --format json c"
    assert lines[3] == f"{g} events --stats c"
    assert lines[4] == f"{g} update --resources - c"
    assert json.loads(lines[5]) == {"pids": {"limit": 5}}
    assert lines[6].startswith(f"{g} exec --process /")
    assert lines[6].endswith(f"--detach --pid-file {bundle}/e1.pid --console-socket /tmp/p.sock c")
    assert lines[7:] == [
        f"{g} pause c",
        f"{g} resume c",
        f"{g} kill --all c 9",
        f"{g} delete --force c",
    ]
    with pytest.raises(errors.NotFound, match="/nonexistent/runc"):
        bad = ShimConfig()
        bad.binary_name = "/nonexistent/runc"
        BinaryBackend(bad, "/r", Reaper(), str(bundle))


def test_shim_delete_kills_through_the_recorded_runtime(tmp_path: Path) -> None:
    from kettle.shim import cleanup
    from kettle.shim.config import write_settings
    from kettle.shim.flags import parse

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    record = tmp_path / "argv"
    fake = tmp_path / "fake-runc"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    fake.chmod(0o755)
    cfg = ShimConfig()
    cfg.binary_name = str(fake)
    write_settings(str(bundle), cfg, "ns5")
    (bundle / "init.pid").write_text("777")
    state = Path("/run/containerd/fake-runc/ns5/c5")
    if os.geteuid() != 0:
        pytest.skip("needs root (the runtime's state directory lives under /run)")
    state.mkdir(parents=True)
    out = cleanup.run(parse(["-namespace", "other", "-id", "c5", "-bundle", str(bundle), "delete"]))
    resp = task_pb.DeleteResponse.decode(out)
    assert (resp.pid, resp.exit_status) == (777, 137)
    assert resp.exited_at is not None and abs(resp.exited_at.seconds - time.time()) < 60
    try:
        argv = record.read_text().split()
        assert argv[:2] == ["--root", "/run/containerd/fake-runc/ns5"]
        assert argv[-3:] == ["delete", "--force", "c5"]
        # Nothing left to delete (the usual case after a normal Delete): no runtime call.
        state.rmdir()
        record.unlink()
        cleanup.run(parse(["-namespace", "other", "-id", "c5", "-bundle", str(bundle), "delete"]))
        assert not record.exists()
    finally:
        for d in (state, state.parent, state.parent.parent):
            with contextlib.suppress(OSError):
                d.rmdir()


def test_library_helper_keeps_only_its_stdio(tmp_path: Path) -> None:
    """The forked helper (and so the container's init) holds no other container's fds."""
    from kettle.shim.backend.library import LibraryBackend

    backend = LibraryBackend(ShimConfig(), str(tmp_path / "root"), Reaper())
    stray = os.open(os.devnull, os.O_RDONLY)  # like another container's fifo in the shim
    out_r, out_w = os.pipe()
    try:

        def body() -> int:
            os.write(1, b"on stdout")
            return len(os.listdir("/proc/self/fd"))

        # 0-2, the result pipe, the log stream and the listing's own fd: nothing else.
        assert backend._in_helper([None, out_w, None], body) == 6
        os.close(out_w)
        out_w = -1
        assert os.read(out_r, 100) == b"on stdout"
        with pytest.raises(errors.Internal, match="RuntimeError: boom"):

            def fail() -> int:
                raise RuntimeError("boom")

            backend._in_helper([None, None, None], fail)
    finally:
        os.close(stray)
        os.close(out_r)
        if out_w >= 0:
            os.close(out_w)
