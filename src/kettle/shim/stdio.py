"""A container process's stdio, from the strings containerd puts in Create and Exec.

- ``""``: nothing (/dev/null).
- a path (no scheme): a fifo the client made and reads or writes.  Output fifos are handed to
  the container directly, so no shim thread copies container output; the shim keeps a read
  handle of its own on each so that a client that goes away (``ctr run -d``) never turns the
  container's writes into SIGPIPE.  stdin goes through a pipe the shim feeds from the fifo:
  a container reading the fifo itself would see EOF before the client has opened it.
- ``file:///path``: stdout and stderr appended to that file.
- ``binary:///path?key=value``: a logging program started with the stdout and stderr pipes as
  fds 3 and 4 and a readiness pipe as fd 5 (containerd's binary log driver contract).
- terminal: the runtime sends the pty master to a console socket the shim listens on; the
  shim copies the stdin fifo to the master and the master to the stdout fifo.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import tempfile

from kettle.errors import InvalidArgument
from kettle.shim.ioloop import IoLoop, Pump

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.shim.reaper import Reaper

_F_DUPFD_CLOEXEC = 1030
_CONSOLE_TIMEOUT_S = 10.0


def _open_fifo_writer(path: str) -> tuple[int, int]:
    """(keep-alive read fd kept by the shim, blocking write fd for the process)."""
    keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        # Cannot block or fail with ENXIO: our own reader is there.
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except BaseException:
        os.close(keep)
        raise
    return keep, w


def _scheme(uri: str) -> tuple[str, str]:
    if "://" not in uri:
        return "", uri
    scheme, rest = uri.split("://", 1)
    return scheme, rest


class ProcessIO:
    """Owns every fd of one process's stdio on the shim side."""

    def __init__(
        self,
        loop: IoLoop,
        reaper: Reaper,
        *,
        stdin: str,
        stdout: str,
        stderr: str,
        terminal: bool,
        io_uid: int = 0,
        io_gid: int = 0,
        container_id: str = "",
        namespace: str = "",
    ) -> None:
        self.loop = loop
        self.reaper = reaper
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.io_uid = io_uid
        self.io_gid = io_gid
        self.container_id = container_id
        self.namespace = namespace
        #: fds the process gets as 0, 1, 2 (None: /dev/null); closed after the runtime call
        self.child: list[int | None] = [None, None, None]
        self._keep: list[int] = []  # fds that live as long as the process's IO
        self._stdin_fifo = -1
        self._stdin_pipe = -1  # our write end of the process's stdin
        self._stdin_pump: Pump | None = None
        self._out_pump: Pump | None = None
        self._master = -1
        self._console_dir = ""
        self._console: socket.socket | None = None
        self._logger_pid = 0
        self._closed = False

    # -- before the runtime call ----------------------------------------------------------

    def open(self) -> None:
        try:
            if self.terminal:
                self._open_terminal()
            else:
                self._open_stdin()
                self._open_outputs()
        except BaseException:
            self.close()
            raise

    def _open_stdin(self) -> None:
        if not self.stdin:
            return
        scheme, path = _scheme(self.stdin)
        if scheme:
            raise InvalidArgument(f"stdin {self.stdin!r}: only a fifo path is supported")
        self._stdin_fifo = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        r, w = os.pipe()
        self._stdin_pipe = w
        self.child[0] = r
        if self.io_uid or self.io_gid:
            os.fchown(r, self.io_uid, self.io_gid)

    def _open_outputs(self) -> None:
        out_scheme = _scheme(self.stdout)[0]
        err_scheme = _scheme(self.stderr)[0]
        if out_scheme == "binary" or err_scheme == "binary":
            self._open_binary(self.stdout if out_scheme == "binary" else self.stderr)
            return
        if out_scheme == "file" or err_scheme == "file":
            uri = self.stdout if out_scheme == "file" else self.stderr
            path = _scheme(uri)[1]
            if not path.startswith("/"):
                raise InvalidArgument(f"log uri {uri!r}: the file path must be absolute")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.child[1] = fd
            self.child[2] = os.dup(fd)
            return
        for index, uri in ((1, self.stdout), (2, self.stderr)):
            if not uri:
                continue
            scheme, path = _scheme(uri)
            if scheme:
                raise InvalidArgument(f"stdio uri {uri!r}: unsupported scheme {scheme!r}")
            if index == 2 and uri == self.stdout and self.child[1] is not None:
                self.child[2] = os.dup(self.child[1])
                continue
            keep, w = _open_fifo_writer(path)
            self._keep.append(keep)
            os.set_blocking(w, True)
            self.child[index] = w

    def _open_binary(self, uri: str) -> None:
        import signal
        from urllib.parse import parse_qsl, urlsplit

        parts = urlsplit(uri)
        if not parts.path.startswith("/"):
            raise InvalidArgument(f"log uri {uri!r}: the binary path must be absolute")
        args = [parts.path]
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            args.append(key)
            if value:
                args.append(value)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ready_r, ready_w = os.pipe()
        high = [fcntl.fcntl(fd, _F_DUPFD_CLOEXEC, 10) for fd in (out_r, err_r, ready_w)]
        for fd in (out_r, err_r, ready_w):
            os.close(fd)
        env = dict(os.environ)
        env["CONTAINER_ID"] = self.container_id
        env["CONTAINER_NAMESPACE"] = self.namespace
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # The pipes must be exactly fds 3, 4 and 5: posix_spawn's dup2 actions place them
        # (from copies at 10 and up, so no target clobbers a source).  Unlike container
        # processes, a logger does not mind glibc leaving its internal signals ignored.
        actions = [
            (os.POSIX_SPAWN_DUP2, null, 0),
            (os.POSIX_SPAWN_DUP2, null, 1),
            (os.POSIX_SPAWN_DUP2, null, 2),
            (os.POSIX_SPAWN_DUP2, high[0], 3),
            (os.POSIX_SPAWN_DUP2, high[1], 4),
            (os.POSIX_SPAWN_DUP2, high[2], 5),
        ]
        try:
            with self.reaper.hold():
                pid = os.posix_spawn(
                    args[0],
                    args,
                    env,
                    file_actions=actions,
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                    setsigmask=(),
                )
                self._logger_pid = pid
                self.reaper.watch(pid, self._logger_exited)
        except OSError as e:
            for fd in (out_w, err_w, ready_r):
                os.close(fd)
            raise InvalidArgument(f"log uri {uri!r}: {(e.strerror or str(e)).lower()}") from None
        finally:
            os.close(null)
            for fd in high:
                os.close(fd)
        self.child[1] = out_w
        self.child[2] = err_w
        # The logger closes (or writes to) fd 5 once it is ready to read.
        os.read(ready_r, 1)
        os.close(ready_r)

    def _logger_exited(self, _status: int) -> None:
        self._logger_pid = 0

    def _open_terminal(self) -> None:
        if self.stderr:
            # containerd never sends one with a terminal: the pty carries both streams.
            raise InvalidArgument("stderr: must be empty with a terminal")
        self._console_dir = tempfile.mkdtemp(prefix="kettle-pty")
        path = os.path.join(self._console_dir, "pty.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(path)
        sock.listen(1)
        self._console = sock

    @property
    def console_socket(self) -> str | None:
        return os.path.join(self._console_dir, "pty.sock") if self._console_dir else None

    # -- after the runtime call -----------------------------------------------------------

    def started(self) -> None:
        """The runtime has handed the child fds on: drop ours and start copying."""
        for i, fd in enumerate(self.child):
            if fd is not None:
                os.close(fd)
                self.child[i] = None
        if self.terminal:
            self._receive_master()
            self._start_terminal_pumps()
        elif self._stdin_fifo >= 0:
            self._stdin_pump = Pump(self.loop, self._stdin_fifo, self._stdin_pipe)
            self._stdin_fifo = self._stdin_pipe = -1
            self._stdin_pump.start()

    def _receive_master(self) -> None:
        import array

        assert self._console is not None
        self._console.settimeout(_CONSOLE_TIMEOUT_S)
        try:
            conn, _ = self._console.accept()
        except TimeoutError:
            raise InvalidArgument("terminal: the runtime sent no console") from None
        with conn:
            conn.settimeout(_CONSOLE_TIMEOUT_S)
            fds = array.array("i")
            _msg, anc, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise InvalidArgument(f"terminal: expected one pty master fd, got {len(fds)}")
        self._master = fds[0]
        os.set_inheritable(self._master, False)
        self._drop_console_socket()

    def _drop_console_socket(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None
        if self._console_dir:
            import shutil

            shutil.rmtree(self._console_dir, ignore_errors=True)
            self._console_dir = ""

    def _start_terminal_pumps(self) -> None:
        if self.stdout:
            keep, w = _open_fifo_writer(_scheme(self.stdout)[1])
            self._keep.append(keep)
            self._out_pump = Pump(self.loop, os.dup(self._master), w)
            self._out_pump.start()
        if self.stdin:
            fifo = os.open(self.stdin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._stdin_pump = Pump(self.loop, fifo, os.dup(self._master))
            self._stdin_pump.start()

    # -- while it runs --------------------------------------------------------------------

    def close_stdin(self) -> None:
        """CloseIO: the client is done writing; pass on what it wrote, then EOF."""
        if self._stdin_pump is not None:
            self._stdin_pump.finish()
        elif self._stdin_pipe >= 0:
            os.close(self._stdin_pipe)
            self._stdin_pipe = -1

    def resize(self, width: int, height: int) -> None:
        if self._master < 0:
            from kettle.errors import FailedPrecondition

            raise FailedPrecondition("resize: the process has no terminal")
        import termios

        fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def output_done(self) -> bool:
        """True once terminal output has been copied to the end (always true without one)."""
        return self._out_pump is None or self._out_pump.done.is_set()

    def wait_output(self, timeout: float) -> None:
        if self._out_pump is not None:
            self._out_pump.done.wait(timeout)

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pump in (self._stdin_pump, self._out_pump):
            if pump is not None and not pump.done.is_set():
                self.loop.call_soon(pump._close)
        for i, fd in enumerate(self.child):
            if fd is not None:
                os.close(fd)
                self.child[i] = None
        for fd in (self._stdin_fifo, self._stdin_pipe, self._master, *self._keep):
            if fd >= 0:
                os.close(fd)
        self._stdin_fifo = self._stdin_pipe = self._master = -1
        self._keep.clear()
        self._drop_console_socket()
