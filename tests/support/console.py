"""The caller's side of runc's console-socket protocol: receive the pty master over SCM_RIGHTS."""

from __future__ import annotations

import array
import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Received:
    """What the runtime sent: the message body and every SCM_RIGHTS fd, per control message."""

    data: bytes = b""
    cmsgs: list[tuple[int, int, bytes]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    connections: int = 0
    extra_data: bytes = b""


class ConsoleSocket:
    """Listens on `path`; a thread accepts connections and records what arrives on each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.received = Received()
        self._stop = threading.Event()
        self._got = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                self.received.connections += 1
                # Room for many fds: the test asserts that exactly one arrived.
                data, ancdata, _flags, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
                if self.received.connections == 1:
                    self.received.data = data
                for level, type_, payload in ancdata:
                    self.received.cmsgs.append((level, type_, payload))
                    if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
                        fds = array.array("i")
                        fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                        self.received.fds.extend(fds)
                with contextlib.suppress(OSError):
                    conn.settimeout(0.2)
                    self.received.extra_data += conn.recv(4096)
                self._got.set()

    def wait(self, timeout: float = 10.0) -> Received:
        if not self._got.wait(timeout):
            raise AssertionError(f"nothing arrived on console socket {self.path}")
        return self.received

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)
        for fd in self.received.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def read_master(fd: int, until: bytes | None = None, timeout: float = 10.0) -> bytes:
    """Reads the pty master until EIO (every slave closed), `until` appears, or `timeout`."""
    import select

    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the container side of the pty is gone
            break
        if not chunk:
            break
        out += chunk
        if until is not None and until in out:
            break
    return out
