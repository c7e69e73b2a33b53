"""A kettle.v1 gRPC client.  grpc is imported here only, when a command talks to kettled."""

from __future__ import annotations

from kettle.api import CLIENT_STREAMING, SERVER_STREAMING, SERVICE, TTRPC_SUFFIX
from kettle.api import kettle_pb as pb
from kettle.errors import KettleError, Unavailable, from_grpc_code
from kettle.proto._wire import Message

# typing and queue cost ~4.5 ms of every kctl start: only the checker needs the first, only
# bidirectional streams (kettle.cli.bidi) the second.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, TypeVar

    from kettle.cli.bidi import Bidi

    M = TypeVar("M", bound=Message)


class DaemonUnavailable(Unavailable):
    pass


class TLSFiles:
    """A client certificate, its key and the CA that signed kettled's (Docker's --tls*)."""

    def __init__(self, ca: str, cert: str, key: str) -> None:
        self.ca, self.cert, self.key = ca, cert, key

    def read(self) -> tuple[bytes, bytes, bytes]:
        from kettle.errors import InvalidArgument

        found = []
        for flag, path in (("--tlscacert", self.ca), ("--tlscert", self.cert),
                           ("--tlskey", self.key)):  # fmt: skip
            try:
                with open(path, "rb") as f:
                    found.append(f.read())
            except OSError as e:
                raise InvalidArgument(f"{flag} {path}: {e.strerror}") from None
        return found[0], found[1], found[2]


class Client:
    def __init__(self, address: str, tls: TLSFiles | None = None) -> None:
        """address: a unix socket path (or unix:PATH), or tcp://HOST:PORT with tls (kettled
        listens on TCP only with mutual TLS).  Nothing is connected or imported until the
        first call."""
        self.address = address
        if address.startswith("tcp://") and tls is None:
            from kettle.errors import InvalidArgument

            raise InvalidArgument(
                f"address {address}: TCP needs --tlscacert, --tlscert and --tlskey"
            )
        self._tls = tls
        self._grpc_mod: Any = None
        self._channel_obj: Any = None
        self._fast: Any = None
        #: False once the ttrpc socket was found missing (an older kettled): gRPC only.
        self._try_fast = not address.startswith("tcp://")

    @property
    def _grpc(self) -> Any:
        if self._grpc_mod is None:
            import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

            self._grpc_mod = grpc
        return self._grpc_mod

    @property
    def _channel(self) -> Any:
        if self._channel_obj is None:
            grpc = self._grpc
            if self.address.startswith("tcp://"):
                assert self._tls is not None
                ca, cert, key = self._tls.read()
                creds = grpc.ssl_channel_credentials(
                    root_certificates=ca, private_key=key, certificate_chain=cert
                )
                self._channel_obj = grpc.secure_channel(self.address[len("tcp://") :], creds)
            else:
                path = self.address.removeprefix("unix:")
                self._channel_obj = grpc.insecure_channel(f"unix:{path}")
        return self._channel_obj

    def _fast_client(self) -> Any:
        """The ttrpc connection for unary calls, or None (then gRPC)."""
        if self._fast is None and self._try_fast:
            from kettle.ttrpc import Client as TtrpcClient

            path = self.address.removeprefix("unix:") + TTRPC_SUFFIX
            try:
                self._fast = TtrpcClient.connect(path, timeout=10)
            except Unavailable:
                self._try_fast = False  # gRPC tells whether kettled is there at all
        return self._fast

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        if self._channel_obj is not None:
            self._channel_obj.close()

    def _error(self, exc: Any) -> KettleError:
        code = exc.code()
        # kettled marks its own errors (kettle.daemon.server.ERROR_MARK).
        from_kettled = any(k == "kettle-error" for k, _v in exc.trailing_metadata() or ())
        if code == self._grpc.StatusCode.UNAVAILABLE and not from_kettled:
            return DaemonUnavailable(
                f"cannot connect to kettled at {self.address}: is it running? start it with kettled"
            )
        return from_grpc_code(code.value[0], exc.details() or code.name.lower())

    def _method(self, name: str) -> Any:
        _req_type, resp_type = pb.KETTLE_SERVICE.methods[name]
        kind = {
            (False, False): "unary_unary",
            (False, True): "unary_stream",
            (True, False): "stream_unary",
            (True, True): "stream_stream",
        }[(name in CLIENT_STREAMING, name in SERVER_STREAMING)]
        return getattr(self._channel, kind)(
            f"/{SERVICE}/{name}",
            request_serializer=lambda m: m.encode(),
            response_deserializer=resp_type.decode,
        )

    def call(self, name: str, request: Message, response_type: type[M]) -> M:
        fast = self._fast_client()
        if fast is not None and name not in CLIENT_STREAMING and name not in SERVER_STREAMING:
            resp = fast.call(SERVICE, name, request, response_type)
            assert isinstance(resp, response_type)
            return resp
        try:
            resp = self._method(name)(request)
        except self._grpc.RpcError as e:
            raise self._error(e) from None
        assert isinstance(resp, response_type)
        return resp

    def stream(self, name: str, request: Message, response_type: type[M]) -> Iterator[M]:
        fast = self._fast_client() if name not in CLIENT_STREAMING else None
        if fast is not None:
            yield from fast.call_stream(SERVICE, name, request, response_type)
            return
        try:
            for resp in self._method(name)(request):
                assert isinstance(resp, response_type)
                yield resp
        except self._grpc.RpcError as e:
            raise self._error(e) from None

    def bidi(self, name: str, first: Message, response_type: type[M]) -> Bidi[M]:
        """A call streaming both ways (Exec, Attach), with `first` sent at once."""
        from kettle.cli.bidi import Bidi

        return Bidi(self, name, first, response_type)
