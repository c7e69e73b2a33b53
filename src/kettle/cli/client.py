"""A kettle.v1 gRPC client.  grpc is imported here only, when a command talks to kettled."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from kettle.api import SERVER_STREAMING, SERVICE
from kettle.api import kettle_pb as pb
from kettle.errors import KettleError, Unavailable, from_grpc_code
from kettle.proto._wire import Message

M = TypeVar("M", bound=Message)


class DaemonUnavailable(Unavailable):
    pass


class Client:
    def __init__(self, address: str) -> None:
        import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

        self._grpc: Any = grpc
        self.address = address
        target = address if address.startswith("unix:") else f"unix:{address}"
        self._channel: Any = grpc.insecure_channel(target)

    def close(self) -> None:
        self._channel.close()

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
        kind = "unary_stream" if name in SERVER_STREAMING else "unary_unary"
        return getattr(self._channel, kind)(
            f"/{SERVICE}/{name}",
            request_serializer=lambda m: m.encode(),
            response_deserializer=resp_type.decode,
        )

    def call(self, name: str, request: Message, response_type: type[M]) -> M:
        try:
            resp = self._method(name)(request)
        except self._grpc.RpcError as e:
            raise self._error(e) from None
        assert isinstance(resp, response_type)
        return resp

    def stream(self, name: str, request: Message, response_type: type[M]) -> Iterator[M]:
        try:
            for resp in self._method(name)(request):
                assert isinstance(resp, response_type)
                yield resp
        except self._grpc.RpcError as e:
            raise self._error(e) from None
