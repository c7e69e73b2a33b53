"""Container output: copied by kettled from the stdio fifos to JSON-lines files, rotated.

Each line is {"stream": "stdout"|"stderr", "time_ns": N, "log": TEXT}, with the line's
newline kept in "log" (a piece of a longer line, or a final partial line, has none), as
Docker's json-file driver does.  An entry written by a container's copier also has
"off": the offset in its stream (bytes since the stream's numbering began) just past the
entry's text.  The entry is the copier's commit record: after kettled is killed, the copier
resumes its stream from the newest entry's offset (see kettle.daemon.stdio).  Readers ignore
keys they do not know.

Rotation is Docker's: once the current file `<id>-json.log` would pass max-size, it becomes
`<id>-json.log.1`, `.1` becomes `.2` and so on; the file past max-file is dropped.  So a
container's log never holds more than about max-size x max-file bytes.

Readers find their way across a rotation by inode, never by name alone: a file a reader holds
open keeps its inode (and its data, even once dropped), and the writer never writes to a file
again once it has renamed it away."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.api.kettle_pb import LogsRequest
    from kettle.daemon.config import Config

log = logging.getLogger("kettled")

Entry = dict[str, object]

#: the --log-opt keys kettle's json-file logs understand.
LOG_OPTS = ("max-size", "max-file")
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILE = 3
#: longest piece of one line kept in one entry (Docker's 16 KiB): a process that never writes
#: a newline still cannot grow one entry, or one file, without bound.
_MAX_PIECE = 16 * 1024
_MIN_PIECE = 64
_FOLLOW_POLL_S = 0.1
#: how often a snapshot is retaken when the writer rotates under it.
_SNAPSHOT_TRIES = 50

# Docker's sizes (go-units RAMInBytes): binary multiples, "10m", "10mb", "10MiB", "1.5g", "512".
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


# -- options -------------------------------------------------------------------------------------


def parse_size(text: str, what: str) -> int:
    """Bytes from Docker's size syntax; `what` names the option in the error."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise InvalidArgument(f"{what} {text!r}: not a size (like 512k, 10m, 1g)")
    size = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if size <= 0:
        raise InvalidArgument(f"{what} {text!r}: must be more than 0 bytes")
    return size


def parse_count(text: str, what: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise InvalidArgument(f"{what} {text!r}: a whole number of files, at least 1")
    return int(text)


def validate_log_opts(log_opts: dict[str, str]) -> None:
    """Refuse an unknown --log-opt or a bad value, naming it (kettled calls this at create, so
    that a container whose logs could never be opened is not made)."""
    for key, value in log_opts.items():
        if key == "max-size":
            parse_size(value, "log-opt max-size")
        elif key == "max-file":
            parse_count(value, "log-opt max-file")
        else:
            raise InvalidArgument(
                f"log-opt {key!r}: unknown option (supported: {', '.join(LOG_OPTS)})"
            )


def open_writer(path: str, log_opts: dict[str, str], config: Config) -> LogWriter:
    """The writer of a container's log (--log-opt, then kettled's defaults)."""
    validate_log_opts(log_opts)
    if "max-size" in log_opts:
        max_size = parse_size(log_opts["max-size"], "log-opt max-size")
    else:
        max_size = parse_size(config.log_max_size, "kettled config logs.max_size")
    if "max-file" in log_opts:
        max_file = parse_count(log_opts["max-file"], "log-opt max-file")
    else:
        max_file = parse_count(str(config.log_max_file), "kettled config logs.max_file")
    return LogWriter(path, max_size, max_file)


# -- writing -------------------------------------------------------------------------------------


def rotated_name(path: str, index: int) -> str:
    """The name of the index-th newest file of a log (0: the one being written)."""
    return f"{path}.{index}" if index else path


def _rotated_indices(path: str) -> list[int]:
    prefix = os.path.basename(path) + "."
    try:
        names = os.listdir(os.path.dirname(path) or ".")
    except FileNotFoundError:
        return []
    found = [n[len(prefix) :] for n in names if n.startswith(prefix)]
    return sorted(int(s) for s in found if s.isdigit() and not s.startswith("0"))


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    """data cut into pieces of at most `size` bytes, never inside a UTF-8 sequence."""
    while len(data) > size:
        cut = size
        # Back off over continuation bytes (10xxxxxx), at most 3, so no character is split.
        while cut > size - 3 and data[cut] & 0xC0 == 0x80:
            cut -= 1
        yield data[:cut]
        data = data[cut:]
    yield data


def _head(stream: str) -> bytes:
    """How every entry of `stream` begins (what last_offsets looks for)."""
    return b'{"stream":' + json.dumps(stream).encode() + b","


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LogWriter:
    """Appends entries of both streams to one log, rotating it; safe from several threads.

    A write that fails (a full disk) is logged and its line dropped: the container's output
    must keep flowing, or the container would block on its full pipe."""

    def __init__(
        self, path: str, max_size: int = DEFAULT_MAX_SIZE, max_file: int = DEFAULT_MAX_FILE
    ) -> None:
        if max_size < 1 or max_file < 1:
            raise InvalidArgument(f"log {path}: max-size and max-file must be at least 1")
        self.path = path
        self.max_size = max_size
        self.max_file = max_file
        self._piece = max(_MIN_PIECE, min(_MAX_PIECE, max_size // 2))
        self._lock = threading.Lock()
        self._closed = False
        self._dropped = 0
        # kettled's max-file may have shrunk since these files were written.
        for index in _rotated_indices(path):
            if index >= max_file:
                os.unlink(rotated_name(path, index))
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        if self._size and os.pread(self._fd, 1, self._size - 1) != b"\n":
            # A kettled killed mid-write left half a line: end it, so the next entry parses.
            _write_all(self._fd, b"\n")
            self._size += 1

    def _open(self) -> int:
        # Read-write only to check, at open, how the last line ends.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, 0o600)

    def write(self, stream: str, data: bytes, end: int | None = None) -> None:
        """Append `data` of `stream` (cut into pieces when long).  end: the stream offset just
        past `data`; each entry then records its own end offset ("off"), so that a piece cut
        short by a kill commits nothing past the entries before it."""
        head = _head(stream) + b'"time_ns":'
        parts = list(_pieces(data, self._piece))
        logs = [
            json.dumps(p.decode("utf-8", "replace"), ensure_ascii=False).encode() for p in parts
        ]
        if end is not None:
            off = end - len(data)
            for i, p in enumerate(parts):
                off += len(p)
                logs[i] += b',"off":' + str(off).encode()
        with self._lock:
            if self._closed:
                log.error("log %s: %s line written after close dropped", self.path, stream)
                return
            # The time is taken under the lock so that the file's order is the time order.
            stamp = str(time.time_ns()).encode()
            try:
                for text in logs:
                    line = head + stamp + b',"log":' + text + b"}\n"
                    if self._size and self._size + len(line) > self.max_size:
                        self._rotate()
                    if self._fd < 0:
                        self._fd = self._open()
                        self._size = 0
                    _write_all(self._fd, line)
                    self._size += len(line)
            except OSError as e:
                self._dropped += 1
                # Once per run of failures, not once per line.
                if self._dropped == 1:
                    log.error("log %s: %s; dropping output until it works again", self.path, e)
                return
            if self._dropped:
                log.error("log %s: writable again, %d lines were dropped", self.path, self._dropped)
                self._dropped = 0

    def last_offsets(self, streams: Collection[str]) -> dict[str, int]:
        """See last_offsets(); taken while no write (or rotation) is under way."""
        with self._lock:
            return last_offsets(self.path, streams)

    def _rotate(self) -> None:
        # Closed before the rename: once a reader sees a new file under the name, the one it
        # holds is complete.
        os.close(self._fd)
        self._fd = -1
        if self.max_file == 1:
            os.unlink(self.path)
        else:
            for index in range(self.max_file - 1, 0, -1):
                try:
                    os.rename(rotated_name(self.path, index - 1), rotated_name(self.path, index))
                except FileNotFoundError:
                    pass  # fewer files than max-file so far
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1


# -- commit offsets ------------------------------------------------------------------------------

#: how much of a log file last_offsets reads at a time, from its end backwards.
_BACK_CHUNK = 64 * 1024


def _lines_backward(f: BinaryIO) -> Iterator[bytes]:
    """The lines of f, last first (without their newlines)."""
    pos = f.seek(0, os.SEEK_END)
    rest = b""
    while pos > 0:
        step = min(_BACK_CHUNK, pos)
        pos -= step
        f.seek(pos)
        lines = (f.read(step) + rest).split(b"\n")
        rest = lines[0]
        yield from reversed(lines[1:])
    yield rest


def last_offsets(path: str, streams: Collection[str]) -> dict[str, int]:
    """The offset ("off") of the newest entry of each of `streams` in the log at `path`, its
    rotated files too: where a copier resumes its stream after kettled was killed.

    A stream with no entry left in the log, or whose newest entry has no offset (written
    without one), is left out.  A damaged line (a write cut short by the kill) commits
    nothing and is passed over.  Reads backwards from the newest file and stops as soon as
    every stream is settled, so a busy stream costs little; a quiet one may cost a scan of
    the whole log."""
    heads = {_head(s): s for s in streams}
    found: dict[str, int] = {}
    settled: set[str] = set()
    for index in [0, *_rotated_indices(path)]:
        try:
            f = open(rotated_name(path, index), "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            continue  # rotated meanwhile, or no log yet
        with f:
            for line in _lines_backward(f):
                name = next((s for h, s in heads.items() if line.startswith(h)), None)
                if name is None or name in settled:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # torn by a kill: the entry before it is the commit
                if not isinstance(entry, dict):
                    continue
                off = entry.get("off")
                if isinstance(off, int) and not isinstance(off, bool):
                    found[name] = off
                settled.add(name)
                if len(settled) == len(heads):
                    return found
    return found


# -- reading -------------------------------------------------------------------------------------


@dataclass
class _File:
    f: BinaryIO
    ino: int
    pos: int = 0


def _close_all(files: list[_File]) -> None:
    for lf in files:
        lf.f.close()


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _snapshot(path: str) -> list[_File]:
    """Every file of the log, open, oldest first, as one consistent set.

    Names are visited from the newest to the oldest, the way rotation moves files, so a file
    renamed meanwhile is met again (and skipped by inode) rather than missed; a rotation that
    put a new file under `path` meanwhile makes us start over."""
    for _ in range(_SNAPSHOT_TRIES):
        files: list[_File] = []
        seen: set[int] = set()
        last = max(_rotated_indices(path), default=0) + 1
        try:
            for index in range(last + 1):
                try:
                    f = open(rotated_name(path, index), "rb")  # noqa: SIM115 (closed by caller)
                except FileNotFoundError:
                    continue
                ino = os.fstat(f.fileno()).st_ino
                if ino in seen:
                    f.close()
                    continue
                seen.add(ino)
                files.append(_File(f, ino))
        except BaseException:
            _close_all(files)
            raise
        current = _ino(path)
        if current is not None and files and files[0].ino == current:
            files.reverse()
            return files
        _close_all(files)
        if current is None and not _rotated_indices(path):
            return []  # no log (yet, or any more)
        time.sleep(0.01)  # the writer is between its rename and its new file
    # The writer rotates faster than we can look: take what is there, in order.
    files = []
    for index in range(max(_rotated_indices(path), default=0), -1, -1):
        try:
            f = open(rotated_name(path, index), "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue
        files.append(_File(f, os.fstat(f.fileno()).st_ino))
    return files


def _read_lines(lf: _File) -> list[bytes]:
    """The complete lines from lf.pos on; lf.pos moves past them (a line being written now is
    left for the next read)."""
    lf.f.seek(lf.pos)
    data = lf.f.read()
    end = data.rfind(b"\n") + 1
    lf.pos += end
    return data[:end].splitlines()


def _parse(line: bytes, path: str) -> Entry | None:
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("time_ns"), int):
        if line.strip():
            log.warning("log %s: skipping a damaged line: %r", path, line[:80])
        return None
    return entry


def _time(entry: Entry) -> int:
    t = entry["time_ns"]
    assert isinstance(t, int)
    return t


class _Window:
    """LogsRequest's since/until."""

    def __init__(self, since_ns: int, until_ns: int) -> None:
        self.since = since_ns
        self.until = until_ns
        self.ended = False

    def keep(self, entry: Entry) -> bool:
        """Whether to show entry; past `until`, `ended` is set."""
        t = _time(entry)
        if self.until and t >= self.until:
            self.ended = True
            return False
        return t >= self.since


def _entries(lf: _File, path: str, window: _Window) -> Iterator[Entry]:
    for line in _read_lines(lf):
        entry = _parse(line, path)
        if entry is None:
            continue
        if window.keep(entry):
            yield entry
        elif window.ended:
            return


def _tail(files: list[_File], path: str, window: _Window, count: int) -> list[Entry]:
    """The last `count` entries inside the window, oldest first (every file read to its end)."""
    chunks = [_read_lines(lf) for lf in files]
    picked: list[Entry] = []
    lines = (line for chunk in reversed(chunks) for line in reversed(chunk))
    for line in lines:
        if len(picked) >= count:
            break
        entry = _parse(line, path)
        if entry is None:
            continue
        t = _time(entry)
        if window.until and t >= window.until:
            window.ended = True
            continue
        if t < window.since:
            break  # the writer stamps under its lock: every older entry is older still
        picked.append(entry)
    picked.reverse()
    return picked


def read_entries(path: str, tail: int) -> tuple[list[Entry], int]:
    """(entries of every file of the log, offset in the current file after them); tail < 0:
    all, else the last `tail` of them."""
    files = _snapshot(path)
    try:
        window = _Window(0, 0)
        if tail >= 0:
            entries = _tail(files, path, window, tail)
        else:
            entries = [e for lf in files for e in _entries(lf, path, window)]
        return entries, files[-1].pos if files else 0
    finally:
        _close_all(files)


def stream(
    path: str,
    req: LogsRequest,
    done: threading.Event | None,
    active: Callable[[], bool] | None = None,
) -> Iterator[Entry]:
    """The entries `kctl logs` asked for; with follow, until `done` (the container's output
    has ended) is set and the log is drained.  done None: the container is not running.
    active: whether the client is still there (a follow of a quiet container ends when not).

    With tail and since/until together, tail counts the entries inside the window."""
    window = _Window(req.since_ns, req.until_ns)
    files = _snapshot(path)
    try:
        if req.tail >= 0:
            yield from _tail(files, path, window, req.tail)
        else:
            for lf in files:
                yield from _entries(lf, path, window)
                if window.ended:
                    break
        if not req.follow or done is None or window.ended or not files:
            return
        current = files.pop()
        _close_all(files)
        files = [current]
        yield from _follow(path, current, done, window, active)
    finally:
        _close_all(files)


def _follow(
    path: str,
    current: _File,
    done: threading.Event,
    window: _Window,
    active: Callable[[], bool] | None,
) -> Iterator[Entry]:
    """Entries written after `current.pos`, across rotations, until done and drained; the
    caller closes `current` (this closes every file it opens after it)."""
    held: _File | None = None  # a file opened here, to close
    try:
        while True:
            finished = done.is_set()
            yield from _entries(current, path, window)
            if window.ended:
                return
            ino = _ino(path)
            if ino is not None and ino != current.ino:
                # Rotated away: the writer closed it before the rename, so what is left in
                # it now is all there is; then on to the files after it, oldest first.
                yield from _entries(current, path, window)
                if window.ended:
                    return
                after = _snapshot(path)
                found = [i for i, lf in enumerate(after) if lf.ino == current.ino]
                if found:
                    newer, older = after[found[0] + 1 :], after[: found[0] + 1]
                else:
                    log.warning("log %s: a follower fell behind rotation; lines lost", path)
                    newer, older = after, []
                _close_all(older)
                if not newer:
                    done.wait(_FOLLOW_POLL_S)  # the log is going away with its container
                    continue
                if held is not None:
                    held.f.close()
                held = current = newer.pop()
                try:
                    for lf in newer:
                        yield from _entries(lf, path, window)
                        if window.ended:
                            return
                finally:
                    _close_all(newer)
                continue
            if finished:
                return
            if active is not None and not active():
                return
            if window.until and time.time_ns() >= window.until:
                return
            done.wait(_FOLLOW_POLL_S)
    finally:
        if held is not None:
            held.f.close()
