"""Staying with a process in the foreground: subreaper, signal forwarding, tty relay, exit code.

Used by ``run`` and by ``exec`` without --detach.  The runtime becomes a child subreaper before
it forks, so the container process (a grandchild) is reparented to it and its exit status is
ours to collect; every signal we can catch is forwarded to it.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: its enums and selectors cost ~4 ms a start
import os
import sys

from kettle import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

if TYPE_CHECKING:
    import signal
else:
    # The C module: signal.py wraps it in enums, which cost ~4 ms on every runtime start.
    import _signal as signal

_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def become_subreaper() -> None:
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)


class Forwarder:
    """Forwards every catchable signal to the container process.

    Installed before the container exists, so that a signal sent while it is being created
    is not lost (nor kills the runtime): it is queued and delivered once the pid is known.
    """

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []

    def install(self) -> None:
        forward_signals(self._handle)

    def set_target(self, pid: int) -> None:
        self.pid = pid
        pending, self.pending = self.pending, []
        for sig in pending:
            self._send(sig)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pid <= 0:
            self.pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass  # it exited between the signal and now: the wait loop will see it


def forward_signals(handler: Callable[[int, FrameType | None], None]) -> None:
    for sig in signal.valid_signals():
        if sig in _UNCATCHABLE or sig in (signal.SIGURG, signal.SIGWINCH):
            continue
        try:
            signal.signal(sig, handler)
        except (OSError, ValueError):
            continue  # signals reserved by the C library cannot have handlers


def wait_for(pid: int) -> int:
    """Reap children until pid exits; its exit code (128+n when killed by signal n)."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


class ConsoleRelay:
    """A console socket of our own, for `run -t`/`exec -t` without --console-socket."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.master = -1

    def receive_master(self) -> None:
        import array

        fds = array.array("i")
        _, anc, _, _ = self.ours.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        if len(fds) != 1:
            raise OSError("console socket: expected exactly one fd")
        self.master = fds[0]
        self.ours.close()

    def pump(self, pid_alive: Callable[[], bool]) -> None:
        """Copy stdin to the pty and the pty to stdout until the pty closes."""
        import selectors
        import termios
        import tty

        old = None
        if os.isatty(0):
            old = termios.tcgetattr(0)
            tty.setraw(0)
            self._copy_winsize()
            signal.signal(signal.SIGWINCH, lambda s, f: self._copy_winsize())
        sel = selectors.DefaultSelector()
        sel.register(self.master, selectors.EVENT_READ)
        stdin_open = True
        try:
            sel.register(0, selectors.EVENT_READ)
        except (ValueError, PermissionError):
            stdin_open = False  # stdin is a regular file or closed: nothing to pump in
        try:
            while True:
                for key, _ in sel.select(0.5):
                    if key.fd == self.master:
                        try:
                            data = os.read(self.master, 65536)
                        except OSError:
                            data = b""
                        if not data:
                            return
                        os.write(1, data)
                    elif stdin_open:
                        data = os.read(0, 65536)
                        if not data:
                            sel.unregister(0)
                            stdin_open = False
                            continue
                        os.write(self.master, data)
                if not pid_alive():
                    # Drain what is left without blocking.
                    try:
                        while data := os.read(self.master, 65536):
                            os.write(1, data)
                    except OSError:
                        pass  # EIO: the slave side is closed
                    return
        finally:
            if old is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, old)
            sys.stdout.flush()

    def _copy_winsize(self) -> None:
        import fcntl
        import termios

        try:
            ws = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, ws)
        except OSError:
            pass  # not a terminal any more: keep the last size
