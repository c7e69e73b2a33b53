"""One thread for everything the shim watches besides its ttrpc connections: stdio copies
(stdin fifos, terminals), OOM notifications and timers.

Pumps never block the loop: sources and sinks are non-blocking, and a sink that is full stops
its source until it drains (the fifo's buffer then holds the container back, as with the Go
shims).  The thread starts on first use, so a shim whose containers need no copying (output
fifos go to the containers directly) runs no extra thread at all.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import select
import threading
import time

from kettle.shim import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

IN = select.EPOLLIN
OUT = select.EPOLLOUT
PRI = select.EPOLLPRI
_CHUNK = 1 << 16


class IoLoop:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ep: select.epoll | None = None
        self._wake = -1
        self._thread: threading.Thread | None = None
        self._callbacks: dict[int, Callable[[int], None]] = {}
        self._soon: list[Callable[[], None]] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def _ensure(self) -> select.epoll:
        with self._lock:
            if self._ep is None:
                self._ep = select.epoll()
                self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                self._ep.register(self._wake, IN)
                self._thread = threading.Thread(target=self._run, name="shim-io", daemon=True)
                self._thread.start()
            return self._ep

    def _kick(self) -> None:
        try:
            os.eventfd_write(self._wake, 1)
        except BlockingIOError:
            pass  # counter saturated: the loop is awake anyway

    # Registration may come from any thread: epoll_ctl is thread-safe and the loop skips
    # events for fds it no longer knows.
    def add(self, fd: int, events: int, callback: Callable[[int], None]) -> None:
        ep = self._ensure()
        self._callbacks[fd] = callback
        ep.register(fd, events)

    def modify(self, fd: int, events: int, callback: Callable[[int], None]) -> None:
        ep = self._ensure()
        self._callbacks[fd] = callback
        ep.modify(fd, events)

    def remove(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None and self._ep is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass  # closed already: the kernel dropped it from the set

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._ensure()
        with self._lock:
            self._soon.append(fn)
        self._kick()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self._ensure()
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))
        self._kick()

    def _run(self) -> None:
        ep = self._ep
        assert ep is not None
        while True:
            with self._lock:
                soon, self._soon = self._soon, []
                due: list[Callable[[], None]] = []
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    due.append(heapq.heappop(self._timers)[2])
                timeout = self._timers[0][0] - now if self._timers else -1.0
            for fn in soon + due:
                self._guard(fn)
            if soon or due:
                continue
            for fd, events in ep.poll(timeout):
                if fd == self._wake:
                    try:
                        os.eventfd_read(self._wake)
                    except BlockingIOError:
                        pass  # drained by an earlier wake-up
                    continue
                callback = self._callbacks.get(fd)
                if callback is not None:
                    self._dispatch(callback, events)

    def _dispatch(self, callback: Callable[[int], None], events: int) -> None:
        self._guard(lambda: callback(events))

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a bug in one stream must not stop every other one
            import traceback

            log.error("io loop: " + "".join(traceback.format_exception(exc)).rstrip())


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


class Pump:
    """Copy src to dst until src ends; then close what it owns and call on_done.

    src ends at EOF, or EIO (a terminal whose other side is closed).  `finish()` asks it to
    copy what is already readable and stop (CloseIO), as the client has said it is done."""

    def __init__(
        self,
        loop: IoLoop,
        src: int,
        dst: int,
        *,
        close_src: bool = True,
        close_dst: bool = True,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.src = src
        self.dst = dst
        self.close_src = close_src
        self.close_dst = close_dst
        self.on_done = on_done
        self._buf = b""
        self._eof = False
        self._finishing = False
        self.done = threading.Event()
        set_nonblocking(src)
        set_nonblocking(dst)

    def start(self) -> None:
        self.loop.add(self.src, IN, self._on_src)

    def finish(self) -> None:
        self.loop.call_soon(self._finish_now)

    def _finish_now(self) -> None:
        if self.done.is_set():
            return
        self._finishing = True
        if not self._buf:
            self._on_src(IN)

    def _on_src(self, _events: int) -> None:
        while not self._buf:
            try:
                data = os.read(self.src, _CHUNK)
            except BlockingIOError:
                if self._finishing:
                    self._eof = True
                    self._close()
                return
            except OSError as e:
                if e.errno != errno.EIO:
                    log.warning(f"stdio copy: read: {os.strerror(e.errno or 0).lower()}")
                data = b""
            if not data:
                self._eof = True
                self._close()
                return
            if not self._write(data):
                return
            if not self._finishing:
                return  # one chunk per wake-up keeps the loop fair between streams

    def _write(self, data: bytes) -> bool:
        """False when the sink is full (the rest waits in _buf) or gone (copy stopped)."""
        try:
            n = os.write(self.dst, data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            if e.errno != errno.EPIPE:
                log.warning(f"stdio copy: write: {os.strerror(e.errno or 0).lower()}")
            self._close()
            return False
        if n < len(data):
            self._buf = data[n:]
            self.loop.remove(self.src)
            self.loop.add(self.dst, OUT, self._on_dst)
            return False
        return True

    def _on_dst(self, _events: int) -> None:
        data, self._buf = self._buf, b""
        self.loop.remove(self.dst)
        if not self._write(data):
            return
        if self._eof or self._finishing:
            if self._finishing and not self._eof:
                self._on_src(IN)
            else:
                self._close()
            return
        self.loop.add(self.src, IN, self._on_src)

    def _close(self) -> None:
        if self.done.is_set():
            return
        self.loop.remove(self.src)
        self.loop.remove(self.dst)
        if self.close_src:
            os.close(self.src)
        if self.close_dst:
            os.close(self.dst)
        self.done.set()
        if self.on_done is not None:
            self.on_done()
