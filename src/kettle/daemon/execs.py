"""Processes run in a running container (`kctl exec`, health checks), through its shim.

An exec's process is the container's own (its spec's process: capabilities, rlimits, env,
cwd, user) with the caller's overrides; its stdio goes through fifos in a directory of its
own under the bundle, made and read by kettled as the container's are.  Each exec talks to the
shim over a connection of its own, and one thread per exec waits for its exit and cleans up
(the shim's exec entry, the fifos) even once the client has gone, so that a detached or
abandoned exec is never left behind in the shim.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import selectors
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from kettle.daemon import shim, stdio, users
from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.daemon.containers import Containers
    from kettle.daemon.store import Record

log = logging.getLogger("kettled")

#: exit status of run_exec when the process ran past its timeout (Docker's health checks
#: record -1 for a timed-out probe).
TIMEOUT_EXIT = -1
#: Docker's: the command could not be found / could not be run.
EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126
#: how long output is still read after the process exited (its orphans may hold the fifos).
_OUTPUT_GRACE_S = 2.0
_CHUNK = 65536
_OUTPUT_BACKLOG = 64


class CannotExec(FailedPrecondition):
    """The process could not be started (no such binary, not executable, bad user...)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ExecOptions:
    args: list[str]
    env: list[str] = field(default_factory=list)
    #: name|uid[:group|gid]; empty: the container's user.
    user: str = ""
    #: empty: the container's working directory.
    workdir: str = ""
    tty: bool = False
    stdin: bool = False
    #: no output is kept (and no stdin given): the process runs on its own.
    detach: bool = False
    privileged: bool = False
    #: initial terminal size (0: leave it to the runtime).
    width: int = 0
    height: int = 0


def process_spec(rec: Record, rootfs: str, opts: ExecOptions) -> dict[str, object]:
    """The exec's OCI process: the container's, with opts' overrides.  The user is resolved
    through the running container's own /etc/passwd and /etc/group (as `docker exec -u`)."""
    from kettle.daemon.spec import merge_env
    from kettle.runtime.caps import CAPS

    if not opts.args:
        raise InvalidArgument("exec: no command given")
    spec = json.loads(rec.spec)
    base = spec.get("process")
    if not isinstance(base, dict):
        raise FailedPrecondition(f"container {rec.id}: its spec has no process")
    proc = dict(base)
    proc["args"] = list(opts.args)
    proc["terminal"] = opts.tty
    proc.pop("consoleSize", None)
    if opts.tty and opts.width and opts.height:
        proc["consoleSize"] = {"width": opts.width, "height": opts.height}
    env = [str(e) for e in base.get("env") or []]
    proc["env"] = merge_env(env, list(opts.env))
    if opts.workdir:
        if not opts.workdir.startswith("/"):
            raise InvalidArgument(f"workdir {opts.workdir!r}: must be an absolute path")
        proc["cwd"] = opts.workdir
    if opts.user:
        proc["user"] = users.resolve(opts.user, [rootfs])
    if opts.privileged:
        every = list(CAPS)
        proc["capabilities"] = {k: every for k in ("bounding", "effective", "permitted")}
    return proc


def _exit_code_for(e: KettleError) -> int:
    text = str(e).lower()
    if isinstance(e, NotFound) or "not found" in text or "no such file" in text:
        return EXIT_NOT_FOUND
    return EXIT_CANNOT_RUN


class Exec:
    """One process in a running container: create with Exec(...), then start()."""

    def __init__(self, containers: Containers, ref: str, opts: ExecOptions) -> None:
        from kettle.daemon.store import PAUSED

        rec, _live = containers._running(ref)
        if rec.status == PAUSED:
            # Its processes are frozen: the exec would hang in the runtime.
            raise FailedPrecondition(f"container {rec.id} is paused: unpause it first")
        self.containers = containers
        self.rec = rec
        self.opts = opts
        self.id = secrets.token_hex(32)
        bundle = containers.bundle(rec.id)
        self.process = process_spec(rec, os.path.join(bundle, "rootfs"), opts)
        self.dir = os.path.join(bundle, "exec", self.id[:16])
        self.pid = 0
        self.exit_code = 0
        self.exited = threading.Event()
        #: set once the exec is gone from the shim and its output has ended.
        self.done = threading.Event()
        self._task: shim.Task | None = None
        self._fds: dict[str, int] = {}
        self._stdin = -1
        self._stdin_lock = threading.Lock()
        self._out: queue.Queue[tuple[str, bytes] | None] = queue.Queue(_OUTPUT_BACKLOG)
        self._discard = threading.Event()
        self._stop_r, self._stop_w = -1, -1
        self._reader: threading.Thread | None = None

    # -- start ---------------------------------------------------------------------------------

    def _paths(self) -> tuple[str, str, str]:
        if self.opts.detach:
            return "", "", ""  # Docker drops a detached exec's output
        stdin = os.path.join(self.dir, "stdin") if self.opts.stdin else ""
        stdout = os.path.join(self.dir, "stdout")
        stderr = "" if self.opts.tty else os.path.join(self.dir, "stderr")
        return stdin, stdout, stderr

    def start(self) -> None:
        """Create and start the process.  CannotExec when it could not be started."""
        stdin, stdout, stderr = self._paths()
        started = False
        try:
            if stdout:
                os.makedirs(self.dir, mode=0o700)
                for stream, path in (("stdout", stdout), ("stderr", stderr)):
                    if path:
                        stdio.make_fifo(path)
                        self._fds[stream] = stdio.open_fifo(path)
                if stdin:
                    stdio.make_fifo(stdin)
            task = self._task = shim.Task(
                self.rec.shim_address, self.containers.namespace, self.rec.id
            )
            task.exec(
                self.id, self.process, stdin=stdin, stdout=stdout, stderr=stderr,
                terminal=self.opts.tty,
            )  # fmt: skip
            self._publish("exec_create")
            try:
                self.pid = task.start(self.id)
            except KettleError as e:
                self._forget()
                code = _exit_code_for(e)
                self._publish("exec_die", exitCode=str(code))
                text = str(e) if self.opts.args[0] in str(e) else f"exec {self.opts.args[0]!r}: {e}"
                raise CannotExec(text, code) from None
            started = True
            self._publish("exec_start")
            if stdin:
                # The shim reads the fifo from Exec (with a terminal: from Start) on.
                fd = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                os.set_blocking(fd, True)
                self._stdin = fd
            if self.opts.tty and self.opts.width and self.opts.height:
                task.resize(self.opts.width, self.opts.height, self.id)
        except BaseException:
            if not started:
                self._cleanup()
                raise
            log.exception("exec %s in container %s: after start", self.id, self.rec.id)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        if self._fds:
            for fd in self._fds.values():
                os.set_blocking(fd, False)
            self._reader = threading.Thread(target=self._read, name="exec-out", daemon=True)
            self._reader.start()
        threading.Thread(target=self._wait, name="exec-wait", daemon=True).start()

    def _publish(self, action: str, **extra: str) -> None:
        cmd = " ".join(self.opts.args)
        self.containers.publish(self.rec, action, execID=self.id, command=cmd, **extra)

    def _forget(self) -> None:
        """Drop a process that never ran from the shim."""
        assert self._task is not None
        try:
            self._task.delete(self.id)
        except KettleError as e:
            log.error("exec %s in container %s: delete: %s", self.id, self.rec.id, e)

    def _cleanup(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self.close_stdin(notify=False)
        if self._task is not None:
            self._task.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1

    # -- output --------------------------------------------------------------------------------

    def _emit(self, item: tuple[str, bytes] | None) -> None:
        while not self._discard.is_set():
            try:
                self._out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _read(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            for stream, fd in self._fds.items():
                sel.register(fd, selectors.EVENT_READ, stream)
            sel.register(self._stop_r, selectors.EVENT_READ, "")
            open_streams = len(self._fds)
            while open_streams:
                for key, _ev in sel.select():
                    stream = key.data
                    if not stream:
                        return  # told to stop: the process's orphans keep the fifos open
                    fd = key.fd
                    try:
                        data = os.read(fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(fd)
                        open_streams -= 1
                        continue
                    self._emit((stream, data))
        finally:
            sel.close()
            self._emit(None)

    def output(self) -> Iterator[tuple[str, bytes]]:
        """(stream, data) chunks until the output has ended."""
        if self._reader is None:
            return
        while True:
            item = self._out.get()
            if item is None:
                return
            yield item

    def abandon_output(self) -> None:
        """Nobody reads the output any more: drain it away so the process never blocks, and
        end output() for a reader still waiting in it."""
        self._discard.set()
        try:
            while True:
                self._out.get_nowait()
        except queue.Empty:
            pass
        try:
            self._out.put_nowait(None)
        except queue.Full:
            pass  # the reader put one last chunk in between: output() ends after it anyway

    # -- input ---------------------------------------------------------------------------------

    def write_stdin(self, data: bytes) -> bool:
        with self._stdin_lock:
            if self._stdin < 0:
                return False
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._stdin, view) :]
            except BrokenPipeError:
                return False
            return True

    def close_stdin(self, notify: bool = True) -> None:
        with self._stdin_lock:
            fd, self._stdin = self._stdin, -1
        if fd < 0:
            return
        os.close(fd)
        if notify and self._task is not None and not self.exited.is_set():
            try:
                self._task.close_stdin(self.id)
            except KettleError as e:
                log.debug("exec %s: close stdin: %s", self.id, e)

    def resize(self, width: int, height: int) -> None:
        if self._task is None or not self.opts.tty:
            raise FailedPrecondition(f"exec {self.id}: has no terminal to resize")
        self._task.resize(width, height, self.id)

    def kill(self, sig: int) -> None:
        if self._task is not None and not self.exited.is_set():
            self._task.kill(sig, exec_id=self.id)

    # -- exit ----------------------------------------------------------------------------------

    def _wait(self) -> None:
        assert self._task is not None
        try:
            code = self._task.wait(self.id)
        except KettleError as e:
            log.error("exec %s in container %s: lost: %s", self.id, self.rec.id, e)
            code = 255
        self.exit_code = code
        self.exited.set()
        if self._reader is not None:
            self._reader.join(_OUTPUT_GRACE_S)
            if self._reader.is_alive():
                os.write(self._stop_w, b"x")
                self._reader.join()
        self.close_stdin(notify=False)
        try:
            self._task.delete(self.id)
        except KettleError as e:
            log.error("exec %s in container %s: delete: %s", self.id, self.rec.id, e)
        self._cleanup()
        self._publish("exec_die", exitCode=str(code))
        self.done.set()


def run_exec(
    containers: Containers,
    cid: str,
    args: list[str],
    timeout_s: float,
    *,
    max_output: int = 65536,
) -> tuple[int, bytes]:
    """Run args in running container cid (no tty, no stdin), output of both streams captured
    (the first max_output bytes).  (exit status, output); TIMEOUT_EXIT when the process ran
    past timeout_s (it is killed); 126/127 with the reason as output when it could not start.
    FailedPrecondition when the container is not running."""
    import signal

    ex = Exec(containers, cid, ExecOptions(args=list(args)))
    try:
        ex.start()
    except CannotExec as e:
        return e.exit_code, str(e).encode()
    captured = bytearray()
    fired = threading.Event()

    def on_timeout() -> None:
        fired.set()
        ex.kill(int(signal.SIGKILL))

    timer = threading.Timer(timeout_s, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        for _stream, data in ex.output():
            room = max_output - len(captured)
            if room > 0:
                captured += data[:room]
        ex.done.wait()
    finally:
        timer.cancel()
        ex.abandon_output()
    return (TIMEOUT_EXIT if fired.is_set() else ex.exit_code), bytes(captured)
