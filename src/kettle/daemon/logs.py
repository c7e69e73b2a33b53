"""Container output: copied by kettled from the stdio fifos to a JSON-lines file.

Each line is {"stream": "stdout"|"stderr", "time_ns": N, "log": TEXT}, with the line's
newline kept in "log" (a final partial line has none), as Docker's json-file driver does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.api.kettle_pb import LogsRequest
    from kettle.daemon.config import Config


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


def open_writer(path: str, log_opts: dict[str, str], config: Config) -> LogWriter:
    """The writer of a container's log (--log-opt, then kettled's defaults)."""
    return LogWriter(path)


def stream(
    path: str, req: LogsRequest, done: threading.Event | None
) -> Iterator[dict[str, object]]:
    """The entries `kctl logs` asked for; with follow, until `done` (the container's output
    has ended) is set and the file is drained.  done None: the container is not running."""
    entries, offset = read_entries(path, req.tail)
    yield from entries
    if req.follow and done is not None:
        yield from follow(path, offset, done)
