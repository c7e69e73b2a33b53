"""ttrpc against the outside world: peer credentials of another uid, containerd's own Go ttrpc
client (ctr 1.6 `ctr shim`), containerd's Go ttrpc server (its events service), and byte-exact
frames as containerd sends them."""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kettle import errors
from kettle.proto import (
    empty_pb,
    envelope_pb,
    events_pb,
    events_service_pb,
    task_pb,
    ttrpc_pb,
    wkt,
)
from kettle.ttrpc import Client, Context, PeerCred, Server
from kettle.ttrpc.address import socket_address
from kettle.ttrpc.frame import TYPE_REQUEST, FrameParser, encode_frame

NOBODY = 65534


def _connect_as_nobody(address: str) -> int:
    """Fork a child that drops to uid/gid 65534, connects and sends one request.

    Exit status: 0 = the server answered, 10 = the server closed the connection unanswered."""
    body = ttrpc_pb.Request(service="test.Ping", method="Ping").encode()
    request = encode_frame(1, TYPE_REQUEST, body)
    name = socket_address(address)
    pid = os.fork()
    if pid == 0:  # child: only raw syscalls, no threads, no imports
        code = 2
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(name)
            try:
                sock.sendall(request)
                code = 0 if sock.recv(64) else 10
            except (ConnectionResetError, BrokenPipeError):
                code = 10
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    return os.WEXITSTATUS(status)


@pytest.fixture
def ping_server(address: str) -> Iterator[tuple[Server, list[str]]]:
    log: list[str] = []
    srv = Server(log=log.append)
    srv.register("test.Ping", {"Ping": lambda payload, ctx: b"pong"})
    srv.listen(address)
    srv.start()
    yield srv, log
    srv.shutdown()


@pytest.mark.privileged
def test_other_uid_is_refused_by_default(
    address: str, ping_server: tuple[Server, list[str]]
) -> None:
    _, log = ping_server
    assert _connect_as_nobody(address) == 10
    assert any("refused connection from pid" in line and f"uid {NOBODY}" in line for line in log)
    # The server itself still serves its own user.
    with Client.connect(address, timeout=5) as client:
        assert client.call_raw("test.Ping", "Ping", b"") == b"pong"


@pytest.mark.privileged
def test_peer_check_is_configurable(address: str) -> None:
    seen: list[PeerCred] = []

    def only_nobody(cred: PeerCred) -> bool:
        seen.append(cred)
        return cred.uid == NOBODY

    srv = Server(peer_check=only_nobody, log=lambda line: None)
    srv.register("test.Ping", {"Ping": lambda payload, ctx: b"pong"})
    srv.listen(address)
    srv.start()
    try:
        assert _connect_as_nobody(address) == 0
        assert (seen[-1].uid, seen[-1].gid) == (NOBODY, NOBODY)
        client = Client.connect(address, timeout=5)
        try:
            with pytest.raises(errors.Unavailable):
                client.call_raw("test.Ping", "Ping", b"", timeout=10)
        finally:
            client.close()
    finally:
        srv.shutdown()


# A State call exactly as containerd 1.6 frames it: stream 1, Request{service, method,
# payload=StateRequest{id:"c1"}, timeout_nano=5s, metadata containerd-namespace-ttrpc=default}.
CONTAINERD_STATE_FRAME = b"".join(
    [
        bytes.fromhex("00000053 00000001 01 00"),  # length 83, stream 1, Request, no flags
        bytes.fromhex("0a 17") + b"containerd.task.v2.Task",  # 1: service
        bytes.fromhex("12 05") + b"State",  # 2: method
        bytes.fromhex("1a 04 0a 02") + b"c1",  # 3: payload = StateRequest{id: "c1"}
        bytes.fromhex("20 80 e4 97 d0 12"),  # 4: timeout_nano = 5_000_000_000
        bytes.fromhex("2a 25 0a 1a") + b"containerd-namespace-ttrpc",  # 5: metadata key
        bytes.fromhex("12 07") + b"default",  # ... and value
    ]
)


def test_decode_a_containerd_request_frame() -> None:
    (frame,) = FrameParser().feed(CONTAINERD_STATE_FRAME)
    assert (frame.stream_id, frame.type, frame.flags) == (1, 1, 0)
    req = ttrpc_pb.Request.decode(frame.payload)
    assert (req.service, req.method, req.timeout_nano) == (
        "containerd.task.v2.Task",
        "State",
        5 * 10**9,
    )
    assert [(kv.key, kv.value) for kv in req.metadata] == [
        ("containerd-namespace-ttrpc", "default")
    ]
    assert task_pb.StateRequest.decode(req.payload) == task_pb.StateRequest(id="c1")
    # Our client writes the same bytes for the same call.
    again = ttrpc_pb.Request(
        service="containerd.task.v2.Task",
        method="State",
        payload=task_pb.StateRequest(id="c1").encode(),
        timeout_nano=5 * 10**9,
        metadata=[ttrpc_pb.KeyValue(key="containerd-namespace-ttrpc", value="default")],
    )
    assert again.encode() == frame.payload


def test_server_answers_a_containerd_frame_byte_for_byte(address: str) -> None:
    seen: list[Context] = []

    def state(req: task_pb.StateRequest, ctx: Context) -> task_pb.StateResponse:
        seen.append(ctx)
        return task_pb.StateResponse(id=req.id, pid=300, status=2)

    srv = Server(log=lambda line: None)
    srv.register_service(task_pb.TASK_SERVICE, type("Impl", (), {"state": staticmethod(state)})())
    srv.listen(address)
    srv.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.connect(socket_address(address))
        sock.sendall(CONTAINERD_STATE_FRAME)
        data = b""
        while len(data) < 10 or len(data) < 10 + int.from_bytes(data[:4], "big"):
            chunk = sock.recv(4096)
            assert chunk
            data += chunk
    finally:
        sock.close()
        srv.shutdown()
    # Response{status: {} (0a 00), payload: StateResponse{id "c1", pid 300, status RUNNING}}
    payload = bytes.fromhex("0a 02") + b"c1" + bytes.fromhex("18 ac 02 20 02")
    expected = bytes.fromhex("0000000d 00000001 02 00 0a 00 12 09") + payload
    assert data == expected
    assert seen[0].get("containerd-namespace-ttrpc") == "default"


@pytest.fixture
def ctr() -> str:
    path = shutil.which("ctr")
    if path is None:
        pytest.skip("ctr (containerd's CLI) is not installed")
    return path


@pytest.mark.peers
def test_containerd_go_client_drives_our_server(ctr: str) -> None:
    """`ctr shim --id ID state|start|delete` is containerd's Go ttrpc client talking to a shim.

    ctr 1.6 looks for the shim at /run/containerd/s/<hash>, then at the abstract socket
    "\\0/containerd-shim/<ns>/<id>/shim.sock" (its Go version counts a trailing NUL into the
    abstract name, hence the one at the end here): a private namespace keeps this test away
    from any real shim."""
    ns = f"kettle-test-{uuid.uuid4().hex[:12]}"
    calls: list[tuple[str, str]] = []

    class Impl:
        def state(self, req: task_pb.StateRequest, ctx: Context) -> task_pb.StateResponse:
            calls.append(("State", req.id))
            if req.id == "missing":
                raise errors.NotFound(f"container {req.id} does not exist")
            return task_pb.StateResponse(
                id=req.id,
                bundle="/run/x",
                pid=1234,
                status=3,
                terminal=True,
                exit_status=137,
                exited_at=wkt.timestamp_from_ns(1_700_000_000_123_456_789),
            )

        def start(self, req: task_pb.StartRequest, ctx: Context) -> task_pb.StartResponse:
            calls.append(("Start", req.id))
            return task_pb.StartResponse(pid=99)

        def delete(self, req: task_pb.DeleteRequest, ctx: Context) -> task_pb.DeleteResponse:
            calls.append(("Delete", req.id))
            return task_pb.DeleteResponse(pid=5, exit_status=3)

    srv = Server(log=lambda line: None)
    srv.register_service(task_pb.TASK_SERVICE, Impl())
    for cid in ("c1", "missing"):
        srv.listen(f"\0/containerd-shim/{ns}/{cid}/shim.sock\0")
    srv.start()

    def run(cid: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [ctr, "--address", f"/nonexistent/{ns}.sock", "--namespace", ns]
        cmd += ["shim", "--id", cid, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    try:
        state = run("c1", "state")
        assert state.returncode == 0, state.stderr
        assert '"pid": 1234' in state.stdout
        assert '"status": 3' in state.stdout
        assert '"exit_status": 137' in state.stdout
        assert '"exited_at": "2023-11-14T22:13:20.123456789Z"' in state.stdout
        start = run("c1", "start", "c1")
        assert start.returncode == 0, start.stderr
        delete = run("c1", "delete", "c1")
        assert delete.returncode == 0, delete.stderr
        assert "exit status 3" in delete.stdout
        missing = run("missing", "state")
        assert missing.returncode != 0
        assert "does not exist" in missing.stderr
        assert "NotFound" in missing.stderr or "not found" in missing.stderr
    finally:
        srv.shutdown()
    assert calls == [("State", "c1"), ("Start", "c1"), ("Delete", "c1"), ("State", "missing")]


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A private containerd (own root, state, sockets; CRI off); yields its gRPC socket."""
    binary = shutil.which("containerd")
    if binary is None:
        pytest.skip("containerd is not installed")
    base = Path(tempfile.mkdtemp(prefix="kettle-ctd-", dir="/tmp"))  # short: sun_path limit
    config = base / "config.toml"
    config.write_text(
        f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{base}/c.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""
    )
    log = (tmp_path / "containerd.log").open("wb")
    proc = subprocess.Popen([binary, "--config", str(config)], stdout=log, stderr=log)
    try:
        ttrpc_sock = base / "c.sock.ttrpc"
        for _ in range(200):
            if ttrpc_sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        if not ttrpc_sock.exists():
            pytest.fail(f"containerd did not start: {(tmp_path / 'containerd.log').read_text()}")
        yield base / "c.sock"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base)


@pytest.mark.peers
def test_our_client_publishes_to_containerds_go_server(containerd: Path, ctr: str) -> None:
    """The shim's event path: Events/Forward to containerd's ttrpc socket, seen by `ctr events`."""
    service = events_service_pb.EVENTS_SERVICE.name
    watcher = subprocess.Popen(
        [ctr, "-a", str(containerd), "events"], stdout=subprocess.PIPE, text=True
    )
    try:
        # `ctr events` subscribes asynchronously: publish until it shows up.
        assert watcher.stdout is not None
        envelope = envelope_pb.Envelope(
            timestamp=wkt.timestamp_now(),
            namespace="kettle-test",
            topic="/tasks/oom",
            event=wkt.pack_any(events_pb.TaskOOM(container_id="c1")),
        )
        request = events_service_pb.ForwardRequest(envelope=envelope)
        with Client.connect(f"{containerd}.ttrpc", timeout=5) as client:
            selector = selectors.DefaultSelector()
            selector.register(watcher.stdout, selectors.EVENT_READ)
            line = ""
            for _ in range(50):
                assert client.call(service, "Forward", request, empty_pb.Empty, timeout=5) == (
                    empty_pb.Empty()
                )
                if selector.select(0.2):
                    line = watcher.stdout.readline()
                    break
            selector.close()
            assert "kettle-test /tasks/oom" in line
            assert '{"container_id":"c1"}' in line
            # Errors from a Go server come back with their codes.
            envelope.topic = "no slash"
            with pytest.raises(errors.InvalidArgument, match="must start with '/'"):
                client.call(service, "Forward", request, empty_pb.Empty, timeout=5)
            with pytest.raises(errors.Unimplemented, match="method Nope"):
                client.call_raw(service, "Nope", b"", timeout=5)
            with pytest.raises(errors.Unimplemented, match=r"service kettle\.Nothing"):
                client.call_raw("kettle.Nothing", "Nope", b"", timeout=5)
    finally:
        watcher.terminate()
        watcher.wait(10)
        if watcher.stdout is not None:
            watcher.stdout.close()
