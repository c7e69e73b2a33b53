"""The long-lived shim: serve the task API on the socket `shim start` handed over as fd 3.

The process is a child subreaper (container processes are reparented to it when the runtime
that started them exits), reaps on SIGCHLD through Python's wake-up fd on the ttrpc loop, logs
to the bundle's ``log`` fifo, and exits once it has no container left (after an optional
linger), removing its socket first so that a new `shim start` never finds a dying shim.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from kettle.shim import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.shim.flags import Flags

POOL_SERVICE = "kettle.shim.v1.Pool"
_FLUSH_S = 5.0


class Daemon:
    def __init__(self, flags: Flags, listener: socket.socket) -> None:
        from kettle.cgroups.host import detect_mode
        from kettle.proto import events_pb, task_pb
        from kettle.shim.events import Publisher
        from kettle.shim.ioloop import IoLoop
        from kettle.shim.oom import OomWatcher
        from kettle.shim.reaper import Reaper
        from kettle.shim.service import RESERVATION_S, TaskService
        from kettle.ttrpc import Server

        self.flags = flags
        self.listener = listener
        name = listener.getsockname()
        #: the socket file, removed before the shim stops serving
        self.socket_path = name if isinstance(name, str) and name.startswith("/") else ""
        self.server = Server(log=log.error)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.reaper = Reaper(kick=self._kick)
        self.loop = IoLoop()
        self.publisher = Publisher(
            flags.namespace,
            os.environ.get("TTRPC_ADDRESS", ""),
            flags.address,
            flags.publish_binary,
            self.reaper,
        )
        self.oom = OomWatcher(
            self.loop, lambda cid: self.publisher.publish(events_pb.TaskOOM(container_id=cid))
        )
        self.service = TaskService(
            namespace=flags.namespace,
            publisher=self.publisher,
            reaper=self.reaper,
            loop=self.loop,
            oom=self.oom,
            cgroup_v2=detect_mode() == "v2",
            on_idle=self.idle,
        )
        self.server.register_service(task_pb.TASK_SERVICE, self.service)
        self.server.register(POOL_SERVICE, {"Admit": self.service.admit})
        self.server.add_listener(listener)
        self.server.add_reader(self._wake_r, self._on_wake)
        self._linger_gen = 0
        if flags.id:
            # The container this shim was started for counts as admitted until its Create.
            self.service.reservations[flags.id] = time.monotonic() + RESERVATION_S
            self.loop.call_later(RESERVATION_S + 0.1, lambda: self.idle(False))

    def _kick(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # a wake-up is pending already

    def _on_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass  # drained
        self.reaper.reap()

    def idle(self, now: bool) -> None:
        """Maybe stop: called on Shutdown and when a reservation expires."""
        if self.service.busy():
            return
        linger = 0.0 if now else self.service.linger
        if linger > 0:
            self._linger_gen += 1
            gen = self._linger_gen
            self.loop.call_later(linger, lambda: self._linger_done(gen))
            return
        self.stop()

    def _linger_done(self, gen: int) -> None:
        if gen == self._linger_gen:
            self.stop(only_if_idle=True)

    def stop(self, only_if_idle: bool = True) -> None:
        if only_if_idle and not self.service.begin_stop():
            return
        if not only_if_idle:
            self.service.stopping = True
        # Remove the socket first: from now on a `shim start` binds a new one instead of
        # handing containerd the address of a shim that is going away.
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass  # removed already
        log.info("shim has no containers left: exiting")
        self.server.shutdown(grace=2.0, wait=False)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGCHLD:
            return  # the wake-up fd already asked the loop to reap
        log.info(f"received signal {signum}: shutting down")
        self.stop(only_if_idle=False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self.reaper.reap()  # children that exited before the handler was in place
        try:
            self.server.serve_forever()
        finally:
            self.publisher.flush(_FLUSH_S)


def serve(flags: Flags) -> int:
    from kettle import syscalls as sc

    log.configure(flags.debug)
    log.open_fifo("log")  # in the bundle (our cwd); without a reader stderr stays /dev/null
    # Nothing is relative to the bundle any more, and a pooled shim outlives the bundle it
    # was started in (containerd removes that directory when its container is deleted).
    os.chdir("/")
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    if flags.socket:
        from kettle.shim.address import from_address

        path = from_address(flags.socket) if "://" in flags.socket else flags.socket
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(128)
    else:
        listener = socket.socket(fileno=3)
        os.set_inheritable(3, False)
    daemon = Daemon(flags, listener)
    log.info(f"shim serving namespace {flags.namespace} (pid {os.getpid()})")
    daemon.serve()
    return 0
