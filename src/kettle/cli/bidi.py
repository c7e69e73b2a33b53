"""Bidirectional kettle.v1 streams (exec, attach), over gRPC."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from kettle.proto._wire import Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

M = TypeVar("M", bound=Message)

_END = object()


class Bidi(Generic[M]):
    """A bidirectional stream: send() from any thread; iterate the responses in one thread.
    cancel() (also from another thread) ends the iteration quietly."""

    def __init__(self, client: Client, name: str, first: Message, response_type: type[M]) -> None:
        self._client = client
        self._type = response_type
        self._outbox: queue.Queue[object] = queue.Queue()
        self._outbox.put(first)
        self._closed = False
        self.cancelled = False
        self._call: Any = client._method(name)(self._requests())

    def _requests(self) -> Iterator[Message]:
        while True:
            item = self._outbox.get()
            if item is _END:
                return
            assert isinstance(item, Message)
            yield item

    def send(self, msg: Message) -> None:
        if not self._closed:
            self._outbox.put(msg)

    def close_send(self) -> None:
        """No more messages from this side (the call goes on)."""
        if not self._closed:
            self._closed = True
            self._outbox.put(_END)

    def cancel(self) -> None:
        self.cancelled = True
        self.close_send()
        self._call.cancel()

    def __iter__(self) -> Iterator[M]:
        grpc = self._client._grpc
        try:
            for resp in self._call:
                assert isinstance(resp, self._type)
                yield resp
        except grpc.RpcError as e:
            if self.cancelled and e.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._client._error(e) from None
        finally:
            self.close_send()
