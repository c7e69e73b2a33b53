"""Container output: copied by kettled from the stdio fifos to a JSON-lines file.

Each line is {"stream": "stdout"|"stderr", "time_ns": N, "log": TEXT}, with the line's
newline kept in "log" (a final partial line has none), as Docker's json-file driver does."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator

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


class LogWriter:
    """Appends entries of both streams to one file; safe from several threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._f = open(path, "ab")  # noqa: SIM115 (lives as long as the container's copiers)

    def write(self, stream: str, data: bytes) -> None:
        entry = {
            "stream": stream,
            "time_ns": time.time_ns(),
            "log": data.decode("utf-8", "replace"),
        }
        line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()


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


def read_entries(path: str, tail: int) -> tuple[list[dict[str, object]], int]:
    """(entries, offset after them); tail < 0: all."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    lines = data[:end].splitlines()
    if tail >= 0:
        lines = lines[len(lines) - tail :] if tail else []
    return [json.loads(line) for line in lines], end


def follow(path: str, offset: int, done: threading.Event) -> Iterator[dict[str, object]]:
    """Entries appended after offset until done is set and the file is drained."""
    while True:
        finished = done.is_set()
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            yield json.loads(line)
        offset += end
        if finished:
            return
        done.wait(0.1)
