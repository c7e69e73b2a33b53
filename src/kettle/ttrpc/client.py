"""ttrpc client over a unix stream socket.

Calls may come from many threads at once: each gets the next odd stream id, frames are written
whole under a lock, and one reader thread hands every response to the call waiting for it, so
a long call (containerd's Wait) does not hold up the others.
"""

from __future__ import annotations

# The C module: socket.py's enums and selectors cost ~3 ms of every kctl start.
import _socket as socket
import threading

from kettle.errors import DeadlineExceeded, KettleError, Unavailable
from kettle.proto._wire import DecodeError, Message
from kettle.proto.ttrpc_pb import KeyValue, Request, Response
from kettle.ttrpc.address import socket_address
from kettle.ttrpc.frame import (
    FLAG_REMOTE_CLOSED,
    TYPE_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    FrameParser,
    encode_frame,
    oversize_message,
)
from kettle.ttrpc.status import RESOURCE_EXHAUSTED, error_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    import queue
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import TypeVar

    M = TypeVar("M", bound=Message)
    Metadata = Mapping[str, str | Sequence[str]]

_RECV_SIZE = 1 << 16
_MAX_STREAM_ID = (1 << 32) - 1


class _Call:
    __slots__ = ("data", "done", "error", "response")

    def __init__(self, streaming: bool = False) -> None:
        self.done = threading.Event()
        self.response: Response | None = None
        self.error: KettleError | None = None
        #: a server stream's Data payloads, then None once the call has ended.
        self.data: queue.Queue[bytes | None] | None = None
        if streaming:
            import queue  # only streams need it; the shim's unary calls do not pay the import

            self.data = queue.Queue()

    def end(self) -> None:
        self.done.set()
        if self.data is not None:
            self.data.put(None)


def _key_values(metadata: Metadata | None) -> list[KeyValue]:
    out: list[KeyValue] = []
    for key, values in (metadata or {}).items():
        for value in [values] if isinstance(values, str) else values:
            out.append(KeyValue(key=key.lower(), value=value))
    return out


class Client:
    """A ttrpc connection.  `metadata` is sent with every call (e.g. containerd's namespace
    key `containerd-namespace-ttrpc`); `on_close` runs on the reader thread when the
    connection ends, whoever ended it."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        metadata: Metadata | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._sock = sock
        self._metadata = _key_values(metadata)
        self._on_close = on_close
        self._lock = threading.Lock()  # _next_id, _calls, _closed
        self._wlock = threading.Lock()
        self._next_id = 1
        self._calls: dict[int, _Call] = {}
        self._closed: KettleError | None = None
        self._reader = threading.Thread(target=self._read_loop, name="ttrpc-client", daemon=True)
        self._reader.start()

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> Client:
        """Connect to `unix:///path`, `/path` or an abstract `@name`."""
        name = socket_address(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(name)
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            reason = exc.strerror.lower() if exc.strerror else "timed out"
            raise Unavailable(f"ttrpc: connect {address}: {reason}") from exc
        return cls(sock, metadata=metadata, on_close=on_close)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def call(
        self,
        service: str,
        method: str,
        request: Message | bytes,
        response_type: type[M],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> M:
        """Call service/method and decode the answer as response_type.  A non-OK status is
        raised as the matching kettle.errors class; a timeout as DeadlineExceeded (the
        server is told the deadline too, through timeout_nano)."""
        payload = self.call_raw(service, method, request, timeout=timeout, metadata=metadata)
        try:
            return response_type.decode(payload)
        except DecodeError as exc:
            raise DecodeError(f"ttrpc: {service}/{method} response: {exc}") from exc

    def call_raw(
        self,
        service: str,
        method: str,
        request: Message | bytes,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> bytes:
        """call() without decoding: the response payload bytes."""
        where = f"{service}/{method}"
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded(f"{where}: deadline exceeded before the call")
        call = _Call()
        stream_id = self._send(service, method, request, timeout, metadata, call, 0)
        if not call.done.wait(timeout):
            self._forget(stream_id)
            raise DeadlineExceeded(f"{where}: deadline exceeded after {timeout:g}s")
        return self._result(call)

    def call_stream(
        self,
        service: str,
        method: str,
        request: Message | bytes,
        response_type: type[M],
        *,
        metadata: Metadata | None = None,
    ) -> Iterator[M]:
        """A server stream (ttrpc 1.2): the request says the client sends nothing more; the
        server answers with Data frames, one message each, then the Response that ends it."""
        call = _Call(streaming=True)
        assert call.data is not None
        stream_id = self._send(service, method, request, None, metadata, call, FLAG_REMOTE_CLOSED)
        try:
            while True:
                payload = call.data.get()
                if payload is None:
                    break
                yield response_type.decode(payload)
            self._result(call)
        finally:
            self._forget(stream_id)

    def _result(self, call: _Call) -> bytes:
        if call.error is not None:
            raise call.error
        resp = call.response
        assert resp is not None
        if resp.status is not None and resp.status.code != 0:
            raise error_for(resp.status.code, resp.status.message)
        return resp.payload

    def _send(
        self,
        service: str,
        method: str,
        request: Message | bytes,
        timeout: float | None,
        metadata: Metadata | None,
        call: _Call,
        flags: int,
    ) -> int:
        where = f"{service}/{method}"
        payload = request.encode() if isinstance(request, Message) else bytes(request)
        req = Request(
            service=service,
            method=method,
            payload=payload,
            timeout_nano=0 if timeout is None else max(1, int(timeout * 1e9)),
            metadata=self._metadata + _key_values(metadata),
        )
        body = req.encode()
        with self._lock:
            if self._closed is not None:
                raise Unavailable(f"{where}: {self._closed}")
            stream_id = self._take_stream_id()
            self._calls[stream_id] = call
        try:
            frame = encode_frame(stream_id, TYPE_REQUEST, body, flags)
            with self._wlock:
                self._sock.sendall(frame)
        except KettleError:
            self._forget(stream_id)
            raise
        except OSError as exc:
            self._forget(stream_id)
            raise Unavailable(f"{where}: ttrpc send: {exc.strerror or exc}") from exc
        return stream_id

    def _take_stream_id(self) -> int:
        # Client streams are odd (1, 3, 5, ...); skip ids still in flight after a wrap.
        while True:
            stream_id = self._next_id
            self._next_id = stream_id + 2 if stream_id + 2 <= _MAX_STREAM_ID else 1
            if stream_id not in self._calls:
                return stream_id

    def _forget(self, stream_id: int) -> None:
        with self._lock:
            self._calls.pop(stream_id, None)

    def close(self) -> None:
        """Close the connection; calls still waiting fail with Unavailable."""
        with self._lock:
            if self._closed is None:
                self._closed = Unavailable("ttrpc: client closed")
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more: the reader has seen EOF already
        if threading.current_thread() is not self._reader:
            self._reader.join()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_loop(self) -> None:
        parser = FrameParser()
        reason = "ttrpc: connection closed by the server"
        try:
            while True:
                try:
                    data = self._sock.recv(_RECV_SIZE)
                except OSError as exc:
                    reason = f"ttrpc: connection lost: {(exc.strerror or str(exc)).lower()}"
                    break
                if not data:
                    break
                for frame in parser.feed(data):
                    if frame.type == TYPE_DATA:
                        with self._lock:
                            call = self._calls.get(frame.stream_id)
                        if call is not None and call.data is not None and not frame.oversize:
                            call.data.put(frame.payload)
                        continue
                    if frame.type != TYPE_RESPONSE:
                        continue  # servers send nothing else
                    with self._lock:
                        call = self._calls.pop(frame.stream_id, None)
                    if call is None:
                        continue  # the caller timed out and left
                    if frame.oversize:
                        call.error = error_for(RESOURCE_EXHAUSTED, oversize_message(frame.oversize))
                    else:
                        try:
                            call.response = Response.decode(frame.payload)
                        except DecodeError as exc:
                            call.error = DecodeError(f"ttrpc: invalid response frame: {exc}")
                    call.end()
        finally:
            with self._lock:
                if self._closed is None:
                    self._closed = Unavailable(reason)
                closed = self._closed
                calls, self._calls = self._calls, {}
            for call in calls.values():
                call.error = Unavailable(str(closed))
                call.end()
            self._sock.close()
            if self._on_close is not None:
                self._on_close()
