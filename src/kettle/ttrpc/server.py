"""ttrpc server over unix stream sockets.

One thread runs an epoll loop over the listening sockets, the connections and any extra file
descriptors the owner registers (a shim can watch its signalfd or OOM eventfds here instead of
starting threads of its own).  Every request runs on a thread of its own, because containerd
keeps a `Wait` pending on the same connection while it sends Kill, State and Delete; responses
therefore go out in completion order, each frame written whole under the connection's lock.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time

from kettle.errors import InvalidArgument, KettleError, SyscallError
from kettle.proto._wire import DecodeError, Message, Service
from kettle.proto.rpc_status_pb import Status
from kettle.proto.ttrpc_pb import Request, Response
from kettle.ttrpc import status as codes
from kettle.ttrpc.address import is_abstract, socket_address
from kettle.ttrpc.context import Context
from kettle.ttrpc.frame import (
    FLAG_REMOTE_CLOSED,
    FLAG_REMOTE_OPEN,
    MAX_MESSAGE_SIZE,
    TYPE_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Frame,
    FrameParser,
    encode_frame,
    oversize_message,
)
from kettle.ttrpc.peercred import PeerCred, peer_credentials, same_user_or_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    Handler = Callable[[Any, Context], Message | bytes | None]
    PeerCheck = Callable[[PeerCred], bool]

_RECV_SIZE = 1 << 16
_EPOLL_IN = select.EPOLLIN
_EPOLL_ERR = select.EPOLLERR | select.EPOLLHUP


class Method:
    """A handler plus the message type its payload decodes to (None: raw bytes)."""

    __slots__ = ("handler", "request_type")

    def __init__(self, handler: Handler, request_type: type[Message] | None = None) -> None:
        self.handler = handler
        self.request_type = request_type


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Conn:
    __slots__ = ("closed", "dropped", "inflight", "lock", "parser", "peer", "sock", "wlock")

    def __init__(self, sock: socket.socket, peer: PeerCred | None) -> None:
        self.sock = sock
        self.peer = peer
        self.parser = FrameParser()
        self.lock = threading.Lock()  # inflight, dropped
        self.wlock = threading.Lock()  # one whole frame at a time on the wire
        self.inflight = 0
        self.dropped = False
        #: set when the peer hung up or the server closed the connection
        self.closed = threading.Event()

    def send(self, data: bytes) -> bool:
        with self.wlock:
            if self.closed.is_set():
                return False
            try:
                self.sock.sendall(data)
            except OSError:
                # The peer went away mid-call; the read side notices and drops the connection.
                return False
            return True


class Server:
    """Serve registered ttrpc services.

    `peer_check` decides, from SO_PEERCRED, whether a new connection is served (default: same
    effective uid as the server, or root); refused connections are closed at once, as Go's
    ttrpc does.  Pass None to accept everyone.  `log` receives one line per connection-level
    problem (refused peer, failed accept, handler crash); default: stderr.
    """

    def __init__(
        self,
        *,
        peer_check: PeerCheck | None = same_user_or_root,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._peer_check = peer_check
        self._log = log or _stderr_log
        self._services: dict[str, dict[str, Method]] = {}
        self._ep = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_lock = threading.Lock()
        self._callbacks: dict[int, Callable[[int], None]] = {self._wake: self._on_wake}
        self._ep.register(self._wake, _EPOLL_IN)
        self._listeners: dict[int, tuple[socket.socket, str | None]] = {}
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()  # _inflight, _stopping, _grace_until
        self._inflight = 0
        self._stopping = False
        self._grace_until: float | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._serving = False

    # -- registration ------------------------------------------------------------------------

    def register(self, service: str, methods: Mapping[str, Handler | Method]) -> None:
        """Add methods to a service.  A plain handler is called with the raw payload bytes; a
        Method with a request_type gets the decoded message.  Handlers return a Message, raw
        bytes, or None (an empty payload, i.e. google.protobuf.Empty)."""
        table = self._services.setdefault(service, {})
        for name, handler in methods.items():
            if name in table:
                raise InvalidArgument(f"ttrpc: method {service}/{name} registered twice")
            table[name] = handler if isinstance(handler, Method) else Method(handler)

    def register_service(self, service: Service, impl: object) -> None:
        """Serve a generated Service from an object whose snake_case methods implement it
        (`State` -> impl.state, `CloseIO` -> impl.close_io).  Methods impl lacks answer
        UNIMPLEMENTED."""
        methods: dict[str, Handler | Method] = {}
        for name, (request_type, _response_type) in service.methods.items():
            handler = getattr(impl, _snake(name), None)
            if handler is not None:
                methods[name] = Method(handler, request_type)
        self.register(service.name, methods)

    # -- sockets -------------------------------------------------------------------------------

    def listen(self, address: str, mode: int = 0o600, backlog: int = 128) -> socket.socket:
        """Bind and listen on a unix socket address (see address.socket_address).  The
        socket file is removed again when the server stops."""
        name = socket_address(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(name)
            if not is_abstract(name):
                os.chmod(name, mode)
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            raise SyscallError("bind", exc.errno or 0, name.replace("\0", "@")) from exc
        self._add_listener(sock, None if is_abstract(name) else name)
        return sock

    def add_listener(self, sock: socket.socket) -> None:
        """Serve a socket that is already listening (e.g. fd 3 handed over by `shim start`)."""
        self._add_listener(sock, None)

    def _add_listener(self, sock: socket.socket, path: str | None) -> None:
        sock.setblocking(False)
        self._listeners[sock.fileno()] = (sock, path)
        self._watch(sock.fileno(), lambda _events: self._accept(sock))

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call callback on the loop thread whenever fd is readable (until remove_reader).
        Callbacks must not block: they hold up every connection.  One that raises is logged
        and stays registered: a bug there must not take the task API down with it."""

        def run(_events: int) -> None:
            try:
                callback()
            except Exception as exc:
                import traceback  # only on a bug: keep it off the import path

                trace = "".join(traceback.format_exception(exc)).rstrip()
                self._log(f"ttrpc: reader callback for fd {fd} failed:\n{trace}")

        self._watch(fd, run)

    def remove_reader(self, fd: int) -> None:
        self._unwatch(fd)

    # -- running -------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Run the loop in the calling thread until shutdown()."""
        if self._serving:
            raise InvalidArgument("ttrpc: server is already serving")
        self._serving = True
        try:
            self._run()
        finally:
            self._cleanup()
            self._done.set()

    def start(self) -> threading.Thread:
        """Run serve_forever() on a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, name="ttrpc-server", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def shutdown(self, grace: float = 0.0, wait: bool = True) -> None:
        """Stop accepting, give running requests up to grace seconds to answer, then close
        every connection.  Safe to call from a handler (with wait=False: the loop finishes
        after that handler's response is written)."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._grace_until = time.monotonic() + grace
        self._kick()
        if wait and self._serving and threading.current_thread() is not self._thread:
            self._done.wait()

    def close(self) -> None:
        if self._serving:
            self.shutdown()
        else:
            self._cleanup()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loop internals ------------------------------------------------------------------------

    def _kick(self) -> None:
        with self._wake_lock:
            if self._wake < 0:
                return  # loop already gone (and the fd number may belong to a new file)
            try:
                os.eventfd_write(self._wake, 1)
            except BlockingIOError:
                pass  # counter saturated: the loop is awake anyway

    def _on_wake(self, _events: int) -> None:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass  # another wake-up already drained it

    # epoll may be changed from any thread, and single dict operations are atomic, so these
    # need no hand-off to the loop thread: the loop skips events for fds it no longer knows.
    def _watch(self, fd: int, callback: Callable[[int], None]) -> None:
        self._callbacks[fd] = callback
        try:
            self._ep.register(fd, _EPOLL_IN)
        except OSError as exc:
            del self._callbacks[fd]
            raise SyscallError("epoll_ctl", exc.errno or 0, f"fd {fd}") from exc

    def _unwatch(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None:
            self._ep.unregister(fd)

    def _run(self) -> None:
        while True:
            with self._lock:
                stopping = self._stopping
                inflight = self._inflight
                grace_until = self._grace_until
            timeout = -1.0
            if stopping:
                self._close_listeners()
                assert grace_until is not None
                timeout = grace_until - time.monotonic()
                if inflight == 0 or timeout <= 0:
                    return
            for fd, events in self._ep.poll(timeout):
                callback = self._callbacks.get(fd)
                if callback is not None:
                    callback(events)

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # EMFILE and friends: keep serving the connections we have.
            self._log(f"ttrpc: accept: {os.strerror(exc.errno or 0).lower()}")
            return
        sock.setblocking(True)
        peer: PeerCred | None = None
        try:
            peer = peer_credentials(sock)
        except OSError as exc:
            self._log(f"ttrpc: SO_PEERCRED: {os.strerror(exc.errno or 0).lower()}")
            sock.close()
            return
        if self._peer_check is not None and not self._peer_check(peer):
            self._log(
                f"ttrpc: refused connection from pid {peer.pid} uid {peer.uid} gid {peer.gid}"
            )
            sock.close()
            return
        conn = _Conn(sock, peer)
        self._conns[sock.fileno()] = conn
        self._watch(sock.fileno(), lambda events: self._readable(conn, events))

    def _readable(self, conn: _Conn, events: int) -> None:
        try:
            # MSG_DONTWAIT: the socket stays blocking for the writers, but the loop never waits.
            data = conn.sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        for frame in conn.parser.feed(data):
            self._dispatch(conn, frame)

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        self._unwatch(fd)
        self._conns.pop(fd, None)
        conn.closed.set()
        with conn.lock:
            conn.dropped = True
            idle = conn.inflight == 0
        if idle:
            conn.sock.close()
        else:
            # Wake writers blocked in sendall; the last request closes the socket (closing it
            # now could hand its fd number to a new file while a writer still holds it).
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected

    def _dispatch(self, conn: _Conn, frame: Frame) -> None:
        if frame.type != TYPE_REQUEST:
            # Data frames belong to streams, which no containerd shim API uses; Go ttrpc 1.1
            # ignores unexpected frame types the same way.
            return
        with conn.lock:
            conn.inflight += 1
        with self._lock:
            self._inflight += 1
        worker = threading.Thread(
            target=self._serve, args=(conn, frame), name="ttrpc-request", daemon=True
        )
        try:
            worker.start()
        except RuntimeError as exc:  # out of threads: answer here, the frame is tiny
            self._log(f"ttrpc: cannot start a request thread: {exc}")
            self._respond(conn, frame.stream_id, codes.RESOURCE_EXHAUSTED, str(exc), b"")
            self._finish(conn)

    def _close_listeners(self) -> None:
        for fd, (sock, path) in list(self._listeners.items()):
            self._unwatch(fd)
            sock.close()
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass  # removed by someone else already: the goal is reached
            del self._listeners[fd]

    def _cleanup(self) -> None:
        if self._wake < 0:
            return  # already cleaned up
        self._close_listeners()
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._ep.close()
        with self._wake_lock:
            os.close(self._wake)
            self._wake = -1

    # -- requests (worker threads) ---------------------------------------------------------

    def _serve(self, conn: _Conn, frame: Frame) -> None:
        try:
            code, message, payload = self._answer(conn, frame)
            self._respond(conn, frame.stream_id, code, message, payload)
        finally:
            self._finish(conn)

    def _stream(self, conn: _Conn, stream_id: int, req: Request, items: Any) -> tuple[int, str]:
        """A handler's iterator of messages as Data frames (ttrpc 1.2 server stream); the
        status for the Response that ends the stream."""
        try:
            for item in items:
                if conn.closed.is_set():
                    return codes.CANCELLED, "ttrpc: the client went away"
                body = item.encode() if isinstance(item, Message) else bytes(item)
                if not conn.send(encode_frame(stream_id, TYPE_DATA, body)):
                    return codes.CANCELLED, "ttrpc: the client went away"
        except Exception as exc:
            code, message = codes.status_for(exc)
            if not isinstance(exc, KettleError | OSError | NotImplementedError):
                self._log_crash(req, exc)
            return code, message
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        return codes.OK, ""

    def _finish(self, conn: _Conn) -> None:
        with conn.lock:
            conn.inflight -= 1
            close = conn.dropped and conn.inflight == 0
        if close:
            conn.sock.close()
        with self._lock:
            self._inflight -= 1
            last = self._stopping and self._inflight == 0
        if last:
            self._kick()

    def _answer(self, conn: _Conn, frame: Frame) -> tuple[int, str, bytes]:
        if frame.stream_id % 2 == 0:
            return codes.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams", b""
        if frame.oversize:
            return codes.RESOURCE_EXHAUSTED, oversize_message(frame.oversize), b""
        try:
            req = Request.decode(frame.payload)
        except DecodeError as exc:
            return codes.INVALID_ARGUMENT, f"ttrpc: invalid request: {exc}", b""
        if frame.flags & FLAG_REMOTE_OPEN:
            return codes.UNIMPLEMENTED, f"ttrpc: streaming {req.method} is not supported", b""
        method = self._services.get(req.service, {}).get(req.method)
        if method is None:
            if req.service not in self._services:
                return codes.UNIMPLEMENTED, f"service {req.service}", b""
            return codes.UNIMPLEMENTED, f"method {req.method}", b""
        metadata: dict[str, list[str]] = {}
        for kv in req.metadata:
            metadata.setdefault(kv.key.lower(), []).append(kv.value)
        deadline = None
        if req.timeout_nano > 0:
            deadline = time.monotonic() + req.timeout_nano / 1e9
        ctx = Context(req.service, req.method, metadata, deadline, conn.peer, conn.closed)
        arg: Any = req.payload
        if method.request_type is not None:
            try:
                arg = method.request_type.decode(req.payload)
            except DecodeError as exc:
                return codes.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}", b""
        try:
            result = method.handler(arg, ctx)
        except Exception as exc:
            code, message = codes.status_for(exc)
            if not isinstance(exc, KettleError | OSError | NotImplementedError):
                self._log_crash(req, exc)
            return code, message, b""
        if result is None:
            return codes.OK, "", b""
        if frame.flags & FLAG_REMOTE_CLOSED and hasattr(result, "__next__"):
            code, message = self._stream(conn, frame.stream_id, req, result)
            return code, message, b""
        if isinstance(result, Message):
            try:
                return codes.OK, "", result.encode()
            except KettleError as exc:
                self._log_crash(req, exc)
                return codes.INTERNAL, f"ttrpc: cannot encode {req.method} response: {exc}", b""
        return codes.OK, "", bytes(result)

    def _log_crash(self, req: Request, exc: BaseException) -> None:
        import traceback  # only on a bug: keep it off the import path

        trace = "".join(traceback.format_exception(exc)).rstrip()
        self._log(f"ttrpc: {req.service}/{req.method} failed unexpectedly:\n{trace}")

    def _respond(
        self, conn: _Conn, stream_id: int, code: int, message: str, payload: bytes
    ) -> None:
        # Go always sends a status, an empty one for OK (bytes 0a 00); clients rely on neither.
        body = Response(status=Status(code=code, message=message), payload=payload).encode()
        if len(body) > MAX_MESSAGE_SIZE:
            # Go's server refuses to send an oversized message too and reports it instead.
            status = Status(code=codes.RESOURCE_EXHAUSTED, message=oversize_message(len(body)))
            body = Response(status=status).encode()
        conn.send(encode_frame(stream_id, TYPE_RESPONSE, body))
