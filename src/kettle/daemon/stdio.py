"""A container's stdio: the fifos kettled shares with the shim, and the threads that copy
the container's output from them into its log."""

from __future__ import annotations

import os
import stat
import threading

from kettle.daemon.logs import LogWriter
from kettle.errors import SyscallError

_CHUNK = 65536


def make_fifo(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
        return
    if not stat.S_ISFIFO(st.st_mode):
        raise SyscallError("mkfifo", 17, path, "exists and is not a fifo")


def open_fifo(path: str) -> int:
    """Our read end, opened before the shim opens the write end (O_NONBLOCK: no writer yet)."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


class Copier:
    """Copies one fifo, line by line, until every writer has closed it."""

    def __init__(self, fd: int, stream: str, out: LogWriter) -> None:
        self._fd = fd
        self._stream = stream
        self._out = out
        self.thread = threading.Thread(target=self._run, name=f"log-{stream}", daemon=True)

    def start(self) -> None:
        # A writer holds the fifo now (the container's process): blocking reads end at EOF.
        os.set_blocking(self._fd, True)
        self.thread.start()

    def _run(self) -> None:
        pending = b""
        try:
            while True:
                data = os.read(self._fd, _CHUNK)
                if not data:
                    break
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._out.write(self._stream, line + b"\n")
            if pending:
                self._out.write(self._stream, pending)
        finally:
            os.close(self._fd)


def drain(path: str, stream: str, out: LogWriter) -> None:
    """What a container that has exited left in its fifo (while kettled was away): the shim
    holds a read end open, so the pipe kept it."""
    fd = open_fifo(path)
    pending = b""
    try:
        while True:
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                break
            if not data:
                break
            pending += data
    finally:
        os.close(fd)
    for line in pending.splitlines(keepends=True):
        out.write(stream, line)


class ContainerIO:
    """One run of a container: its fifos in the bundle and the copiers into its log.

    The shim opens the fifos by path (as containerd's do); kettled opens its read ends first,
    non-blocking, so that neither side waits for the other."""

    def __init__(self, bundle: str, writer: LogWriter, stdin: bool, terminal: bool) -> None:
        self.bundle = bundle
        self.writer = writer
        self.terminal = terminal
        self.stdin_path = os.path.join(bundle, "stdin") if stdin else ""
        self.stdout_path = os.path.join(bundle, "stdout")
        # With a terminal the pty merges both streams into stdout.
        self.stderr_path = "" if terminal else os.path.join(bundle, "stderr")
        self.copiers: list[Copier] = []
        self._fds: dict[str, int] = {}

    def _streams(self) -> dict[str, str]:
        found = {"stdout": self.stdout_path, "stderr": self.stderr_path}
        return {s: p for s, p in found.items() if p}

    def open(self) -> None:
        """Make the fifos and open our read ends (before the shim's Create)."""
        try:
            for stream, path in self._streams().items():
                make_fifo(path)
                self._fds[stream] = open_fifo(path)
            if self.stdin_path:
                make_fifo(self.stdin_path)
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Start copying (once the shim holds the write ends)."""
        for stream, fd in self._fds.items():
            self.copiers.append(Copier(fd, stream, self.writer))
        self._fds.clear()
        for c in self.copiers:
            c.start()

    def close(self) -> None:
        """Close read ends never handed to a copier (a failed start)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def wait_drained(self, timeout: float) -> None:
        for c in self.copiers:
            c.thread.join(timeout)

    def drain_exited(self) -> None:
        """What a container that exited while kettled was away left in its fifos."""
        for stream, path in self._streams().items():
            drain(path, stream, self.writer)
