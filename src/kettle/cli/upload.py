"""Client-streaming calls to kettled (a request stream, one response): `load` sends an archive.

kettle.cli.client.Client has unary and server-streaming calls; this adds the client-streaming
kind over its channel, with the same error mapping."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, TypeVar

from kettle.api import CLIENT_STREAMING, SERVICE
from kettle.api import kettle_pb as pb
from kettle.errors import InvalidArgument
from kettle.proto._wire import Message

if TYPE_CHECKING:
    from kettle.cli.client import Client

M = TypeVar("M", bound=Message)

#: bytes per DataChunk (well under gRPC's default 4 MiB message limit).
CHUNK = 1 << 20


def stream_unary(
    client: Client, name: str, requests: Iterable[Message], response_type: type[M]
) -> M:
    """Send `requests` as the request stream of method `name`; its one response."""
    if name not in CLIENT_STREAMING:
        raise InvalidArgument(f"{name} does not take a request stream")
    call = client._channel.stream_unary(
        f"/{SERVICE}/{name}",
        request_serializer=lambda m: m.encode(),
        response_deserializer=response_type.decode,
    )
    failed: list[BaseException] = []

    def guarded() -> Iterator[Message]:
        # grpc turns an exception of the request iterator into a bare CANCELLED: keep it.
        try:
            yield from requests
        except BaseException as e:
            failed.append(e)
            raise

    try:
        resp = call(guarded())
    except client._grpc.RpcError as e:
        if failed:
            raise failed[0] from None
        raise client._error(e) from None
    assert isinstance(resp, response_type)
    return resp


def chunks(f: IO[bytes], size: int = CHUNK) -> Iterator[pb.DataChunk]:
    """A file's bytes as DataChunks."""
    while data := f.read(size):
        yield pb.DataChunk(data=data)
