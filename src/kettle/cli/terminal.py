"""kctl's side of interactive containers: raw terminal mode, window sizes, Docker's detach keys,
and the loop that joins kctl's stdin and stdout to an Exec or Attach stream."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from kettle.api import kettle_pb as pb
from kettle.errors import InvalidArgument

if TYPE_CHECKING:
    from kettle.cli.bidi import Bidi

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(spec: str) -> bytes:
    """Docker's --detach-keys: comma-separated keys, each a single character or ctrl-<c>
    (c: a-z, @, [, \\, ], ^, _).  Empty: the default ctrl-p,ctrl-q."""
    out = bytearray()
    for key in (spec or DEFAULT_DETACH_KEYS).split(","):
        if len(key) == 1:
            out.append(ord(key))
            continue
        low = key.lower()
        if low.startswith("ctrl-") and len(key) == 6:
            c = low[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            if c in _CTRL_SPECIAL:
                out.append(_CTRL_SPECIAL[c])
                continue
        raise InvalidArgument(f"--detach-keys {spec!r}: unknown key {key!r}")
    return bytes(out)


class DetachMatcher:
    """Finds the detach sequence in input.  A partial match is held back and passed on as it
    was once the sequence breaks, as Docker's escape proxy does."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to forward, whether the sequence was completed)."""
        out = bytearray()
        for b in data:
            if self.keys and b == self.keys[self._held]:
                self._held += 1
                if self._held == len(self.keys):
                    self._held = 0
                    return bytes(out), True
                continue
            if self._held:
                out += self.keys[: self._held]
                self._held = 0
                if self.keys and b == self.keys[0]:
                    self._held = 1
                    continue
            out.append(b)
        return bytes(out), False


def size(fd: int) -> tuple[int, int]:
    """(width, height) of the terminal on fd; (0, 0) when it is none."""
    try:
        sz = os.get_terminal_size(fd)
    except OSError:
        return 0, 0
    return sz.columns, sz.lines


class RawMode:
    """The terminal on fd in raw mode until exit (restored always, also on SIGTERM/SIGHUP,
    which are turned into SystemExit so that the restore runs)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None
        self._old_handlers: dict[int, object] = {}

    def __enter__(self) -> RawMode:
        import termios
        import tty

        if not os.isatty(self.fd):
            return self
        self._saved = termios.tcgetattr(self.fd)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _exit_on_signal)
        tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *_exc: object) -> None:
        import termios

        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]  # what signal() gave back
        self._old_handlers.clear()


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def watch_resize(stream: Bidi[pb.IOOutput], fd: int) -> Callable[[], None]:
    """Send the terminal's size now and on every SIGWINCH; returns the undo."""

    def send(*_args: object) -> None:
        w, h = size(fd)
        if w and h:
            stream.send(pb.IOInput(resize=pb.WindowSize(width=w, height=h)))

    old = signal.signal(signal.SIGWINCH, send)
    send()

    def undo() -> None:
        signal.signal(signal.SIGWINCH, old)

    return undo


class Session:
    """Joins kctl's stdin/stdout/stderr to an Exec or Attach stream.

    stdin (when given) is read in a thread: its bytes go to the stream, the detach keys
    (with a tty) cancel the stream, and its end sends close_stdin when close_at_eof (Docker's
    stdin_once: `kctl run -i`, `kctl exec -i`).  interact() copies output until the stream
    ends and gives its last message (exited set), or None after a detach or a cancel."""

    def __init__(
        self,
        stream: Bidi[pb.IOOutput],
        *,
        stdin: bool,
        tty: bool,
        detach_keys: bytes,
        close_at_eof: bool,
    ) -> None:
        self.stream = stream
        self.stdin = stdin
        self.tty = tty
        self.matcher = DetachMatcher(detach_keys) if tty and detach_keys else None
        self.close_at_eof = close_at_eof
        self.detached = threading.Event()
        self._it = iter(stream)

    def first(self) -> pb.IOOutput | None:
        """The stream's first message (Attach: "attached"; Exec: the exec id)."""
        return next(self._it, None)

    def _pump_stdin(self) -> None:
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, 32768)
            except OSError:
                data = b""
            if not data:
                if self.close_at_eof:
                    self.stream.send(pb.IOInput(close_stdin=True))
                return
            if self.matcher is not None:
                data, detach = self.matcher.feed(data)
                if data:
                    self.stream.send(pb.IOInput(stdin=data))
                if detach:
                    self.detached.set()
                    self.stream.cancel()
                    return
                continue
            self.stream.send(pb.IOInput(stdin=data))

    def interact(self) -> pb.IOOutput | None:
        """Raw mode (a tty with stdin from a terminal), window sizes (a tty), input, output."""
        in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
        raw = RawMode(in_fd) if self.tty and self.stdin else None
        undo_resize = None
        try:
            if raw is not None:
                raw.__enter__()
            if self.tty and os.isatty(out_fd):
                undo_resize = watch_resize(self.stream, out_fd)
            if self.stdin:
                threading.Thread(target=self._pump_stdin, name="stdin", daemon=True).start()
            return self._copy_output()
        finally:
            if undo_resize is not None:
                undo_resize()
            if raw is not None:
                raw.__exit__()

    def _copy_output(self) -> pb.IOOutput | None:
        stdout = sys.stdout.buffer
        stderr = sys.stderr.buffer
        for msg in self._it:
            if msg.data and msg.stream != "error":
                target = stderr if msg.stream == "stderr" else stdout
                target.write(msg.data)
                target.flush()
            if msg.exited:
                return msg
        return None

    def finish(self, last: pb.IOOutput | None) -> int:
        """kctl's exit status for the stream's end: the process's, 0 after a detach."""
        from kettle.errors import Unavailable

        if last is None:
            if self.detached.is_set():
                sys.stderr.write("\nread escape sequence\n")  # the terminal is cooked again
                return 0
            raise Unavailable("the stream ended before the process did")
        if last.stream == "error":
            sys.stderr.write(f"kctl: {last.data.decode(errors='replace')}\n")
        return last.exit_code
