"""Fixtures for the ttrpc tests: a real server on a unique abstract unix socket, in a thread."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from kettle.ttrpc import Client, Server


@pytest.fixture
def address() -> str:
    # Abstract namespace: nothing on disk to clean up, and no directory permissions in the way
    # of the peer-credential test's unprivileged child.
    return f"@kettle-ttrpc-test-{uuid.uuid4().hex}"


@pytest.fixture
def server_log() -> list[str]:
    return []


@pytest.fixture
def server(address: str, server_log: list[str]) -> Iterator[Server]:
    srv = Server(log=server_log.append)
    srv.listen(address)
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture
def connect(address: str) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(**kwargs: object) -> Client:
        client = Client.connect(address, timeout=5, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def client(connect: Callable[..., Client], server: Server) -> Client:
    return connect()
