"""Server and client over a real unix socket, the server running in a thread."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kettle import errors
from kettle.proto import empty_pb, rpc_status_pb, task_pb, ttrpc_pb
from kettle.ttrpc import MAX_MESSAGE_SIZE, Client, Context, Method, Server
from kettle.ttrpc.address import socket_address
from kettle.ttrpc.frame import (
    TYPE_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameParser,
    encode_frame,
)

TASK = "containerd.task.v2.Task"


class Raw:
    """A hand-driven connection for what the Client refuses to send."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(socket_address(address))
        self.parser = FrameParser()
        self.frames: list[Frame] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, stream_id: int, service: str, method: str, payload: bytes = b"", **kw: object
    ) -> None:
        req = ttrpc_pb.Request(service=service, method=method, payload=payload, **kw)  # type: ignore[arg-type]
        self.send(encode_frame(stream_id, TYPE_REQUEST, req.encode()))

    def response(self) -> tuple[int, ttrpc_pb.Response]:
        while not self.frames:
            data = self.sock.recv(1 << 16)
            assert data, "server closed the connection"
            self.frames += self.parser.feed(data)
        frame = self.frames.pop(0)
        assert frame.type == TYPE_RESPONSE
        assert frame.flags == 0
        return frame.stream_id, ttrpc_pb.Response.decode(frame.payload)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(address: str, server: Server) -> Iterator[Callable[[], Raw]]:
    conns: list[Raw] = []

    def make() -> Raw:
        conn = Raw(address)
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event handlers block on; always set at teardown so no handler thread is left."""
    event = threading.Event()
    yield event
    event.set()


class Task:
    """A toy TaskService: Wait blocks until `exited` is set."""

    def __init__(self, exited: threading.Event) -> None:
        self.exited = exited
        self.waiting = threading.Event()
        self.seen: list[tuple[str, Context]] = []

    def state(self, req: task_pb.StateRequest, ctx: Context) -> task_pb.StateResponse:
        self.seen.append(("State", ctx))
        return task_pb.StateResponse(id=req.id, pid=4242, status=2)

    def wait(self, req: task_pb.WaitRequest, ctx: Context) -> task_pb.WaitResponse:
        self.waiting.set()
        ctx.wait(self.exited)
        return task_pb.WaitResponse(exit_status=7)

    def kill(self, req: task_pb.KillRequest, ctx: Context) -> None:
        if req.id == "gone":
            raise errors.NotFound(f"process {req.id} already finished")
        if req.id == "bug":
            raise ZeroDivisionError("division by zero")
        self.exited.set()

    def close_io(self, req: task_pb.CloseIORequest, ctx: Context) -> None:
        self.seen.append(("CloseIO", ctx))

    def resize_pty(self, req: task_pb.ResizePtyRequest, ctx: Context) -> None:
        self.seen.append(("ResizePty", ctx))


@pytest.fixture
def task(server: Server, release: threading.Event) -> Task:
    impl = Task(release)
    server.register_service(task_pb.TASK_SERVICE, impl)
    return impl


def test_typed_round_trip(client: Client, task: Task) -> None:
    resp = client.call(TASK, "State", task_pb.StateRequest(id="c1"), task_pb.StateResponse)
    assert resp == task_pb.StateResponse(id="c1", pid=4242, status=2)


def test_none_result_is_an_empty_payload(client: Client, task: Task) -> None:
    assert client.call_raw(TASK, "Kill", task_pb.KillRequest(id="c1")) == b""
    assert (
        client.call(TASK, "Kill", task_pb.KillRequest(id="c1"), empty_pb.Empty) == empty_pb.Empty()
    )


def test_snake_case_method_names(client: Client, task: Task) -> None:
    client.call(TASK, "CloseIO", task_pb.CloseIORequest(id="c1", stdin=True), empty_pb.Empty)
    client.call(TASK, "ResizePty", task_pb.ResizePtyRequest(id="c1"), empty_pb.Empty)
    assert [name for name, _ in task.seen] == ["CloseIO", "ResizePty"]


def test_raw_handler_gets_bytes_and_may_return_bytes(server: Server, client: Client) -> None:
    got: list[bytes] = []

    def echo(payload: bytes, ctx: Context) -> bytes:
        got.append(payload)
        return payload[::-1]

    server.register("test.Echo", {"Echo": echo})
    assert client.call_raw("test.Echo", "Echo", b"\x01\x02\x03") == b"\x03\x02\x01"
    assert got == [b"\x01\x02\x03"]


def test_metadata_and_deadline_reach_the_handler(
    connect: Callable[..., Client], task: Task
) -> None:
    client = connect(metadata={"containerd-namespace-ttrpc": "k8s.io"})
    client.call(
        TASK,
        "State",
        task_pb.StateRequest(id="c1"),
        task_pb.StateResponse,
        timeout=30,
        metadata={"X-Trace": ["a", "b"]},
    )
    (_, ctx) = task.seen[-1]
    assert ctx.get("containerd-namespace-ttrpc") == "k8s.io"
    assert ctx.metadata["x-trace"] == ["a", "b"]
    remaining = ctx.remaining()
    assert remaining is not None and 0 < remaining <= 30
    assert ctx.peer is not None and ctx.peer.pid == os.getpid()
    client.call(TASK, "State", task_pb.StateRequest(id="c1"), task_pb.StateResponse)
    assert task.seen[-1][1].deadline is None


def test_slow_call_does_not_block_others_on_the_same_connection(
    client: Client, task: Task, release: threading.Event
) -> None:
    result: list[object] = []

    def waiter() -> None:
        try:
            result.append(
                client.call(TASK, "Wait", task_pb.WaitRequest(id="c1"), task_pb.WaitResponse)
            )
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert task.waiting.wait(10), "Wait never reached the server"
    # Wait is pending on this connection; State and Kill must still be answered.
    for _ in range(3):
        state = client.call(TASK, "State", task_pb.StateRequest(id="c1"), task_pb.StateResponse)
        assert state.pid == 4242
    assert result == []
    client.call(TASK, "Kill", task_pb.KillRequest(id="c1", signal=9), empty_pb.Empty)
    thread.join(10)
    assert result == [task_pb.WaitResponse(exit_status=7)]


def test_many_threads_share_one_client(server: Server, client: Client) -> None:
    def double(payload: bytes, ctx: Context) -> bytes:
        return payload * 2

    server.register("test.Math", {"Double": double})
    results: dict[int, bytes] = {}

    def work(n: int) -> None:
        for i in range(20):
            key = f"{n}-{i}".encode()
            results[n * 100 + i] = client.call_raw("test.Math", "Double", key)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 160
    assert all(v == f"{k // 100}-{k % 100}".encode() * 2 for k, v in results.items())


def test_client_stream_ids_are_odd_and_increasing(raw: Callable[[], Raw], address: str) -> None:
    # Observe the client from the server side of a hand-made listener.
    name = socket_address(address + "-ids")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(1)
    client = Client.connect(address + "-ids", timeout=5)
    conn, _ = listener.accept()
    try:
        answered = threading.Event()
        ids: list[int] = []

        def serve() -> None:
            parser = FrameParser()
            while len(ids) < 3:
                for frame in parser.feed(conn.recv(4096)):
                    ids.append(frame.stream_id)
                    ok = ttrpc_pb.Response(status=rpc_status_pb.Status()).encode()
                    conn.sendall(encode_frame(frame.stream_id, TYPE_RESPONSE, ok))
            answered.set()

        threading.Thread(target=serve, daemon=True).start()
        for _ in range(3):
            client.call_raw("s", "m", b"")
        assert answered.wait(10)
        assert ids == [1, 3, 5]
    finally:
        client.close()
        conn.close()
        listener.close()


def test_unknown_service_and_method_are_unimplemented(client: Client, task: Task) -> None:
    with pytest.raises(errors.Unimplemented, match=r"service no\.Such"):
        client.call_raw("no.Such", "Thing", b"")
    with pytest.raises(errors.Unimplemented, match="method Checkpoint"):
        client.call_raw(TASK, "Checkpoint", b"")
    with pytest.raises(errors.Unimplemented, match="method Nope"):
        client.call_raw(TASK, "Nope", b"")


def test_handler_errors_keep_their_code(client: Client, task: Task) -> None:
    with pytest.raises(errors.NotFound, match="process gone already finished"):
        client.call(TASK, "Kill", task_pb.KillRequest(id="gone"), empty_pb.Empty)


def test_unexpected_exception_is_unknown_and_logged(
    client: Client, task: Task, server_log: list[str]
) -> None:
    with pytest.raises(errors.KettleError, match="division by zero") as info:
        client.call(TASK, "Kill", task_pb.KillRequest(id="bug"), empty_pb.Empty)
    assert errors.grpc_code(info.value) == 2
    assert any("ZeroDivisionError" in line and "Task/Kill" in line for line in server_log)


def test_undecodable_payload_is_internal(client: Client, task: Task) -> None:
    with pytest.raises(errors.Internal, match="unmarshalling payload"):
        client.call_raw(TASK, "State", b"\x0a\x05ab")


def test_oversized_request_gets_resource_exhausted_and_connection_survives(
    raw: Callable[[], Raw], task: Task
) -> None:
    conn = raw()
    size = MAX_MESSAGE_SIZE + 1
    header = size.to_bytes(4, "big") + (7).to_bytes(4, "big") + bytes([TYPE_REQUEST, 0])
    conn.send(header)
    stream, resp = conn.response()
    assert stream == 7
    assert resp.status is not None
    assert resp.status.code == 8
    assert resp.status.message == f"message length {size} exceed maximum message size of 4194304"
    conn.send(b"\x00" * size)  # the body the server now skips
    conn.request(9, TASK, "State", task_pb.StateRequest(id="after").encode())
    stream, resp = conn.response()
    assert stream == 9
    assert resp.status == rpc_status_pb.Status()
    assert task_pb.StateResponse.decode(resp.payload).id == "after"


def test_client_refuses_to_send_oversized_request(client: Client, task: Task) -> None:
    with pytest.raises(errors.ResourceExhausted, match="exceed maximum message size"):
        client.call_raw(TASK, "State", b"\x00" * MAX_MESSAGE_SIZE)
    assert (
        client.call(TASK, "State", task_pb.StateRequest(id="c1"), task_pb.StateResponse).pid == 4242
    )


def test_oversized_response_becomes_resource_exhausted(server: Server, client: Client) -> None:
    server.register("test.Big", {"Big": lambda payload, ctx: b"\x00" * MAX_MESSAGE_SIZE})
    with pytest.raises(errors.ResourceExhausted, match="exceed maximum message size"):
        client.call_raw("test.Big", "Big", b"")
    server.register("test.Small", {"Small": lambda payload, ctx: b"ok"})
    assert client.call_raw("test.Small", "Small", b"") == b"ok"


def test_even_stream_id_is_invalid_argument(raw: Callable[[], Raw], task: Task) -> None:
    conn = raw()
    conn.request(2, TASK, "State")
    stream, resp = conn.response()
    assert stream == 2
    assert resp.status is not None and resp.status.code == 3
    assert "odd" in resp.status.message


def test_non_request_frames_are_ignored(raw: Callable[[], Raw], task: Task) -> None:
    conn = raw()
    conn.send(encode_frame(1, TYPE_DATA, b"junk"))
    conn.send(encode_frame(3, TYPE_RESPONSE, b"junk"))
    conn.request(5, TASK, "State", task_pb.StateRequest(id="c1").encode())
    stream, resp = conn.response()
    assert stream == 5 and resp.status == rpc_status_pb.Status()


def test_malformed_request_is_invalid_argument(raw: Callable[[], Raw], task: Task) -> None:
    conn = raw()
    conn.send(encode_frame(1, TYPE_REQUEST, b"\x0a\x09short"))
    _, resp = conn.response()
    assert resp.status is not None and resp.status.code == 3


def test_streaming_request_is_unimplemented(raw: Callable[[], Raw], task: Task) -> None:
    conn = raw()
    body = ttrpc_pb.Request(service=TASK, method="State").encode()
    conn.send(encode_frame(1, TYPE_REQUEST, body, flags=0x02))
    _, resp = conn.response()
    assert resp.status is not None and resp.status.code == 12


def test_client_timeout_is_deadline_exceeded_and_client_stays_usable(
    client: Client, task: Task, release: threading.Event
) -> None:
    with pytest.raises(errors.DeadlineExceeded, match="Task/Wait"):
        client.call(TASK, "Wait", task_pb.WaitRequest(id="c1"), task_pb.WaitResponse, timeout=0.2)
    release.set()  # the late answer to the abandoned Wait must be dropped quietly
    assert (
        client.call(TASK, "State", task_pb.StateRequest(id="c1"), task_pb.StateResponse).pid == 4242
    )


def test_zero_timeout_fails_before_sending(client: Client, task: Task) -> None:
    with pytest.raises(errors.DeadlineExceeded):
        client.call(TASK, "State", task_pb.StateRequest(), task_pb.StateResponse, timeout=0)
    assert task.seen == []


def test_server_side_deadline_from_timeout_nano(raw: Callable[[], Raw], task: Task) -> None:
    conn = raw()
    payload = task_pb.WaitRequest(id="c1").encode()
    conn.request(1, TASK, "Wait", payload, timeout_nano=100_000_000)
    _, resp = conn.response()
    assert resp.status is not None
    assert resp.status.code == 4
    assert resp.status.message == f"{TASK}/Wait: deadline exceeded"


def test_pending_calls_fail_when_the_server_goes_away(
    address: str, server_log: list[str], release: threading.Event
) -> None:
    srv = Server(log=server_log.append)
    srv.listen(address)
    impl = Task(release)
    srv.register_service(task_pb.TASK_SERVICE, impl)
    srv.start()
    closed = threading.Event()
    client = Client.connect(address, on_close=closed.set)
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            client.call(TASK, "Wait", task_pb.WaitRequest(id="c1"), task_pb.WaitResponse)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert impl.waiting.wait(10)
        srv.shutdown()
        thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], errors.Unavailable)
        assert closed.wait(10)
        assert client.closed
        with pytest.raises(errors.Unavailable):
            client.call(TASK, "State", task_pb.StateRequest(), task_pb.StateResponse)
    finally:
        client.close()


def test_context_reports_closed_connection(
    server: Server, address: str, release: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kettle.ttrpc.context._CLOSE_POLL_S", 0.1)
    outcome: list[BaseException] = []
    started = threading.Event()
    done = threading.Event()

    def hang(payload: bytes, ctx: Context) -> bytes:
        started.set()
        try:
            ctx.wait(release)
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            done.set()
        return b""

    server.register("test.Hang", {"Hang": hang})
    conn = Raw(address)
    conn.request(1, "test.Hang", "Hang")
    assert started.wait(10)
    conn.close()
    # Context.wait() notices within its polling period.
    assert done.wait(20)
    assert len(outcome) == 1 and isinstance(outcome[0], errors.Cancelled)


def test_filesystem_socket_mode_and_removal(tmp_path: Path, server_log: list[str]) -> None:
    path = tmp_path / "t.sock"
    srv = Server(log=server_log.append)
    srv.listen(str(path), mode=0o600)
    srv.register("test.Ping", {"Ping": lambda payload, ctx: b"pong"})
    srv.start()
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with Client.connect(f"unix://{path}", timeout=5) as client:
            assert client.call_raw("test.Ping", "Ping", b"") == b"pong"
    finally:
        srv.shutdown()
    assert not path.exists()


def test_listen_on_a_busy_address_fails(address: str, server: Server) -> None:
    with pytest.raises(errors.SyscallError) as info:
        Server().listen(address)
    assert info.value.errno == 98  # EADDRINUSE: what shim start checks


def test_connect_failure_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(errors.Unavailable, match="no such file"):
        Client.connect(str(tmp_path / "absent.sock"), timeout=5)


def test_register_twice_is_an_error(server: Server) -> None:
    server.register("test.Dup", {"A": lambda payload, ctx: None})
    with pytest.raises(errors.InvalidArgument, match=r"test\.Dup/A"):
        server.register("test.Dup", {"A": lambda payload, ctx: None})


def test_method_wrapper_decodes_requests(server: Server, client: Client) -> None:
    def handler(req: task_pb.ConnectRequest, ctx: Context) -> task_pb.ConnectResponse:
        return task_pb.ConnectResponse(shim_pid=os.getpid(), version=req.id)

    server.register("test.Typed", {"Connect": Method(handler, task_pb.ConnectRequest)})
    resp = client.call(
        "test.Typed", "Connect", task_pb.ConnectRequest(id="v2"), task_pb.ConnectResponse
    )
    assert resp == task_pb.ConnectResponse(shim_pid=os.getpid(), version="v2")


def test_add_reader_runs_callback_on_the_loop(server: Server) -> None:
    r, w = os.pipe()
    fired = threading.Event()

    def on_readable() -> None:
        os.read(r, 1)
        fired.set()

    try:
        server.add_reader(r, on_readable)
        os.write(w, b"x")
        assert fired.wait(10)
        server.remove_reader(r)
    finally:
        os.close(r)
        os.close(w)


def test_failing_reader_callback_is_logged_and_loop_survives(
    server: Server, client: Client, server_log: list[str]
) -> None:
    r, w = os.pipe()
    calls: list[int] = []

    def broken() -> None:
        calls.append(len(os.read(r, 1)))
        raise RuntimeError("reader bug")

    try:
        server.add_reader(r, broken)
        os.write(w, b"x")
        server.register("test.Ping", {"Ping": lambda payload, ctx: b"pong"})
        # The loop handled the readable pipe before (or while) answering; it still serves.
        for _ in range(100):
            assert client.call_raw("test.Ping", "Ping", b"") == b"pong"
            if calls:
                break
        assert calls == [1]
        assert any("reader bug" in line and f"fd {r}" in line for line in server_log)
        server.remove_reader(r)
    finally:
        os.close(r)
        os.close(w)


def test_shutdown_from_a_handler_answers_first(address: str, server_log: list[str]) -> None:
    srv = Server(log=server_log.append)
    srv.listen(address)

    def shutdown(payload: bytes, ctx: Context) -> bytes:
        srv.shutdown(grace=5, wait=False)
        return b"bye"

    srv.register("test.Life", {"Shutdown": shutdown})
    thread = srv.start()
    with Client.connect(address, timeout=5) as client:
        assert client.call_raw("test.Life", "Shutdown", b"") == b"bye"
    thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(errors.Unavailable):
        Client.connect(address, timeout=5)


def test_server_streams_answer_with_data_frames_then_a_status(
    server: Server, connect: Callable[..., Client]
) -> None:
    """ttrpc 1.2 server streams: a handler's iterator goes out as Data frames, one message
    each, and the Response that follows ends the stream (with the error, if one was raised)."""
    client = connect()

    def count(req: empty_pb.Empty, _ctx: Context) -> Iterator[task_pb.StartResponse]:
        for pid in (1, 2, 3):
            yield task_pb.StartResponse(pid=pid)

    def broken(req: empty_pb.Empty, _ctx: Context) -> Iterator[task_pb.StartResponse]:
        yield task_pb.StartResponse(pid=7)
        raise errors.NotFound("container gone mid-stream")

    server.register(
        "test.Stream",
        {"Count": Method(count, empty_pb.Empty), "Broken": Method(broken, empty_pb.Empty)},
    )
    got = client.call_stream("test.Stream", "Count", empty_pb.Empty(), task_pb.StartResponse)
    assert [r.pid for r in got] == [1, 2, 3]
    seen = []
    with pytest.raises(errors.NotFound, match="mid-stream"):
        for r in client.call_stream(
            "test.Stream", "Broken", empty_pb.Empty(), task_pb.StartResponse
        ):
            seen.append(r.pid)
    assert seen == [7]
    # A unary call on the same connection still works after the streams.
    assert [r.pid for r in client.call_stream(
        "test.Stream", "Count", empty_pb.Empty(), task_pb.StartResponse)][:1] == [1]  # fmt: skip


def test_a_stream_ends_when_its_client_goes(server: Server, connect: Callable[..., Client]) -> None:
    ended = threading.Event()
    active_seen: list[bool] = []

    def forever(req: empty_pb.Empty, ctx: Context) -> Iterator[task_pb.StartResponse]:
        ctx.add_callback(ended.set)
        n = 0
        while ctx.is_active():
            n += 1
            yield task_pb.StartResponse(pid=n)
        active_seen.append(ctx.is_active())

    server.register("test.Stream", {"Forever": Method(forever, empty_pb.Empty)})
    client = connect()
    stream = client.call_stream("test.Stream", "Forever", empty_pb.Empty(), task_pb.StartResponse)
    assert next(stream).pid == 1
    client.close()
    assert ended.wait(10), "add_callback did not fire when the connection went"
