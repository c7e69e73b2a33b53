"""A container's stdio: the fifos kettled shares with the shim, the threads that copy the
container's output from them into its log and to attached clients (`kctl attach`, `kctl run
-it`), and kettled's write end of the container's stdin.

Attached clients subscribe to the container's Hub (one per bundle, alive while a run or an
attachment uses it), so that a client may attach to a created container before it starts and
see all of its output.  kettled keeps the stdin fifo's write end open for the whole run, so the
container does not read EOF when an attached client goes away; only an explicit close (a
client's close_stdin: `kctl run -i` at the end of its input, Docker's stdin_once) or the end of
the run closes it.

Output goes from each fifo to a spool file in the bundle by splice(2) only, then from the spool
into the log, each entry recording the stream offset it ends at: so a kettled killed at any
instant loses no byte and logs none twice once it starts again (see Spool)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import stat
import struct
import threading
import time
from collections.abc import Callable

from kettle.daemon.logs import LogWriter
from kettle.errors import SyscallError
from kettle.syscalls.splice import splice

log = logging.getLogger("kettled")
_CHUNK = 65536
#: output an attached client may fall behind by before it is cut off (the log keeps it all).
_ATTACH_BACKLOG = 8 << 20


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


class Attachment:
    """One attached client's view of a container's output: (stream, data) chunks, then None
    once the run it is attached to has ended (or the client fell too far behind)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        #: set when the client fell behind by more than _ATTACH_BACKLOG and was cut off.
        self.overflowed = False
        self._pending = 0
        self._ended = False
        self._lock = threading.Lock()

    def offer(self, stream: str, data: bytes) -> None:
        with self._lock:
            if self._ended:
                return
            if self._pending + len(data) > _ATTACH_BACKLOG:
                self.overflowed = True
                self._ended = True
                self.queue.put(None)
                return
            self._pending += len(data)
        self.queue.put((stream, data))

    def end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self.queue.put(None)

    def get(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        """The next chunk; None at the end.  queue.Empty after `timeout`."""
        item = self.queue.get(timeout=timeout)
        if item is not None:
            with self._lock:
                self._pending -= len(item[1])
        return item

    def close(self) -> None:
        """Detach (idempotent)."""
        self.end()
        self.hub.unsubscribe(self)


class Hub:
    """A container's attached clients and kettled's end of its stdin, across its runs."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.refs = 0
        self.running = False
        self._lock = threading.Lock()
        self._current: list[Attachment] = []  # attached to the run in progress
        self._next: list[Attachment] = []  # waiting for the next run (a created container)
        self._members: set[Attachment] = set()  # every attachment holding a reference
        self._stdin = -1
        self._stdin_lock = threading.Lock()

    # -- clients -------------------------------------------------------------------------------

    def subscribe(self, wait_for_start: bool) -> Attachment:
        """Attach to the run in progress; with none, to the next one when wait_for_start (a
        created container), else the attachment has ended at once (the run is over)."""
        a = Attachment(self)
        with self._lock:
            self.refs += 1
            self._members.add(a)
            if self.running:
                self._current.append(a)
            elif wait_for_start:
                self._next.append(a)
            else:
                a.end()
        return a

    def unsubscribe(self, a: Attachment) -> None:
        with self._lock:
            if a not in self._members:
                return
            self._members.discard(a)
            for group in (self._current, self._next):
                if a in group:
                    group.remove(a)
        _release(self)

    def publish(self, stream: str, data: bytes) -> None:
        with self._lock:
            targets = list(self._current)
        for a in targets:
            a.offer(stream, data)

    # -- runs ------------------------------------------------------------------------------------

    def run_started(self) -> None:
        with self._lock:
            self.running = True
            self._current += self._next
            self._next = []

    def run_ended(self) -> None:
        """Every output stream of the run has ended: its attached clients are done."""
        with self._lock:
            self.running = False
            ended, self._current = self._current, []
        for a in ended:
            a.end()

    # -- stdin -----------------------------------------------------------------------------------

    def set_stdin(self, fd: int) -> None:
        with self._stdin_lock:
            old, self._stdin = self._stdin, fd
        if old >= 0:
            os.close(old)

    @property
    def has_stdin(self) -> bool:
        return self._stdin >= 0

    def write_stdin(self, data: bytes) -> bool:
        """Write to the container's stdin; False when it has none (or it was closed).  Blocks
        while the container does not read (the client is held back, as with Docker)."""
        with self._stdin_lock:
            fd = self._stdin
            if fd < 0:
                return False
            view = memoryview(data)
            try:
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise SyscallError("write", e.errno or 0, "stdin") from None
                return False  # the container's stdin has gone: nobody reads it any more
            return True

    def close_stdin(self) -> None:
        self.set_stdin(-1)


_hubs: dict[str, Hub] = {}
_hubs_lock = threading.Lock()


def attach(key: str, wait_for_start: bool) -> Attachment:
    """Subscribe to a container's output (key: its bundle path; see Hub.subscribe)."""
    with _hubs_lock:
        h = _hubs.get(key)
        if h is None:
            h = _hubs[key] = Hub(key)
        return h.subscribe(wait_for_start)


def _acquire(key: str) -> Hub:
    """The container's hub with a reference taken (a run uses it until _release)."""
    with _hubs_lock:
        h = _hubs.get(key)
        if h is None:
            h = _hubs[key] = Hub(key)
        with h._lock:
            h.refs += 1
        return h


def _release(h: Hub) -> None:
    with _hubs_lock:
        with h._lock:
            h.refs -= 1
            if h.refs > 0:
                return
        if _hubs.get(h.key) is h:
            del _hubs[h.key]
    h.close_stdin()


# -- output: fifo -> spool -> log ----------------------------------------------------------------

#: a spool's header: its magic, then `base`, the stream offset of its first byte of data.
_SPOOL_HEADER = struct.Struct("<8sQ")
_SPOOL_MAGIC = b"kspool\x00\x01"
#: a spool holding this many bytes the log already has is replaced by one holding only the
#: rest (a partial line, mostly) ...
_SPOOL_MAX = 1 << 20
#: ... and so is one holding this many once the pipe is empty: a quiet container keeps little.
_SPOOL_IDLE = 64 << 10
#: the longest piece of a line one entry holds (Docker's 16 KiB): output that never ends its
#: line is still logged, in pieces.
_LINE_MAX = 16 * 1024
#: the most one splice moves (more than a pipe holds unless its writer grew it).
_SPLICE_MAX = 1 << 20
#: how often a copier that lost its spool (a full disk) tries to make a new one.
_RESPOOL_S = 1.0


def spool_path(fifo: str) -> str:
    """Where the output of the fifo at `fifo` is spooled: beside it in the bundle."""
    return fifo + ".spool"


class Spool:
    """One output stream's bytes on their way from its fifo to the log: a file holding the
    stream's bytes [base, end), `base` (the stream offset of its first byte) in its header.

    Only splice(2) from the fifo appends to it, so whenever kettled is killed each byte is
    either still in the pipe or already in the file.  Log entries record the stream offset
    they end at (the commit), and the file is only ever replaced whole (a rename) by one whose
    base the log has reached, so base <= committed <= end holds at every instant: a kettled
    started again converts [committed, end) and goes on splicing after it.

    A stream's numbering goes on across the container's runs: at the end of a run its spool
    is emptied, not removed, keeping the stream's end as its base, and a spool that was lost
    (the state dir with it) starts from the log's newest offset.  So the newest entry of a
    stream in the log is always one of its spool's numbering: no run id is needed."""

    def __init__(self, path: str, fd: int, base: int, end: int) -> None:
        self.path = path
        self.base = base
        self.end = end
        self._fd = fd

    @classmethod
    def load(cls, path: str) -> Spool | None:
        """The spool left at `path`; None when there is none (or it is no spool: logged)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SyscallError("open", e.errno or 0, path, "output spool") from None
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, _SPOOL_HEADER.size, 0)
        except OSError as e:
            os.close(fd)
            raise SyscallError("read", e.errno or 0, path, "output spool") from None
        if len(head) == _SPOOL_HEADER.size:
            magic, base = _SPOOL_HEADER.unpack(head)
            if magic == _SPOOL_MAGIC:
                return cls(path, fd, base, base + size - _SPOOL_HEADER.size)
        os.close(fd)
        log.error("%s: not an output spool; replacing it, its bytes are not logged", path)
        return None

    @classmethod
    def create(cls, path: str, base: int) -> Spool:
        """A new, empty spool at `path` whose data will start at stream offset `base`; when
        it cannot be written (a full disk), a missing one, to be made again later (replace)."""
        try:
            return cls(path, _write_spool(path, base, b""), base, base)
        except SyscallError as e:
            log.error("%s: %s; the stream goes unspooled for now", path, e)
            return cls(path, -1, base, base)

    @property
    def missing(self) -> bool:
        return self._fd < 0

    def take(self, fifo: int) -> int | None:
        """Splice what the fifo holds now onto the end: the bytes moved, 0 at the end of the
        stream (no writer left, nothing in the pipe), None when the pipe is empty now."""
        at = _SPOOL_HEADER.size + self.end - self.base
        n = splice(fifo, self._fd, _SPLICE_MAX, offset_out=at, nonblock=True, path=self.path)
        if n:
            self.end += n
        return n

    def read(self, start: int, stop: int) -> bytes:
        """The stream's bytes [start, stop), inside [base, end)."""
        assert self.base <= start <= stop <= self.end
        if start == stop:
            return b""
        parts = []
        at, left = _SPOOL_HEADER.size + start - self.base, stop - start
        while left:
            try:
                data = os.pread(self._fd, left, at)
            except OSError as e:
                raise SyscallError("read", e.errno or 0, self.path, "output spool") from None
            if not data:
                raise SyscallError("read", errno.EIO, self.path, "output spool shorter than known")
            parts.append(data)
            at += len(data)
            left -= len(data)
        return b"".join(parts)

    def replace(self, base: int, data: bytes) -> None:
        """Become the spool of the stream's bytes [base, base + len(data)): a new file renamed
        over this one, so that a kill leaves one or the other, whole."""
        fd = _write_spool(self.path, base, data)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self.base, self.end = fd, base, base + len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_spool(path: str, base: int, data: bytes) -> int:
    """A spool file (header and data) put at `path` by a rename; its fd."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise SyscallError("open", e.errno or 0, tmp, "output spool") from None
    call = "write"
    try:
        view = memoryview(_SPOOL_HEADER.pack(_SPOOL_MAGIC, base) + data)
        while view:
            view = view[os.write(fd, view) :]
        call = "rename"
        os.rename(tmp, path)
    except OSError as e:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise SyscallError(call, e.errno or 0, tmp, "output spool") from None
    return fd


def _open_spool(path: str, stream: str, out: LogWriter) -> tuple[Spool, int]:
    """The stream's spool and the offset in it up to which the log has its bytes."""
    sp = Spool.load(path)
    if sp is None:
        # No spool (the container's first run, or the state dir was lost): the numbering
        # goes on from the log's newest entry, so no entry in the log passes for this spool's.
        base = out.last_offsets([stream]).get(stream, 0)
        return Spool.create(path, base), base
    if sp.end == sp.base:
        return sp, sp.base  # nothing to look up: the log has all the spool ever had
    committed = out.last_offsets([stream]).get(stream)
    try:
        if committed is None or committed < sp.base:
            # None: the stream's entries went with rotated-away files, so converting from
            # base again duplicates none that a reader can see; below base: lines the log
            # dropped (a full disk).
            return sp, sp.base
        if committed > sp.end:
            # The log is ahead of the spool (output read unspooled was logged): go on after
            # the log, lest new entries carry offsets it already has.
            sp.close()
            return Spool.create(path, committed), committed
        return sp, committed
    except BaseException:
        sp.close()
        raise


def _utf8_cut(data: bytes, cut: int) -> int:
    """cut moved back (at most 3 bytes) off any UTF-8 continuation byte: no character split."""
    low = cut - 3
    while cut > low and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


class _Output:
    """One stream of a container as it reaches the log: bytes [done, end) of the stream are
    in its spool (`tail` holds them) and not yet in the log, the rest is.

    Without a spool (one could not be written: a full disk) the stream is read straight
    from the fifo, as kettled did before it spooled, until a new spool can be made: bytes
    read then live only in memory until logged."""

    def __init__(self, stream: str, spool: Spool, done: int, out: LogWriter) -> None:
        self.stream = stream
        self.spool = spool
        self.out = out
        self.hub: Hub | None = None
        self.done = done
        self.tail = spool.read(done, spool.end)
        self.unspooled = spool.missing
        self._compact_at = _SPOOL_MAX
        self._respool_at = 0.0
        self._warned = False

    @property
    def end(self) -> int:
        return self.done + len(self.tail)

    def pump(self, fifo: int) -> int | None:
        """Move what the fifo holds now to the spool and on: the bytes moved, 0 at the end of
        the stream, None when the pipe is empty now."""
        if not self.unspooled:
            try:
                n = self.spool.take(fifo)
            except SyscallError as e:
                log.error("%s: %s; reading the fifo without it for now", self.spool.path, e)
                self.unspooled = True
                self._respool_at = time.monotonic() + _RESPOOL_S
            else:
                if n:
                    self._got(self.spool.read(self.spool.end - n, self.spool.end))
                return n
        try:
            data = os.read(fifo, _CHUNK)
        except BlockingIOError:
            return None
        except OSError as e:
            raise SyscallError("read", e.errno or 0, self.spool.path, "output fifo") from None
        if data:
            self._got(data)
        return len(data)

    def _got(self, data: bytes) -> None:
        # Attached clients get output as it comes, a prompt without its newline too.
        if self.hub is not None:
            self.hub.publish(self.stream, data)
        self.tail += data
        self.convert()
        if self.unspooled:
            if time.monotonic() >= self._respool_at:
                self._compact()
        elif self.done - self.spool.base >= self._compact_at:
            self._compact()

    def convert(self, final: bool = False) -> None:
        """Log the whole lines of the tail (a line longer than _LINE_MAX in pieces); final:
        the stream has ended, its last partial line too."""
        t, pos, n = self.tail, 0, len(self.tail)
        while pos < n:
            nl = t.find(b"\n", pos, pos + _LINE_MAX)
            if nl >= 0:
                cut = nl + 1
            elif n - pos > _LINE_MAX:
                cut = _utf8_cut(t, pos + _LINE_MAX)
            elif final:
                cut = n
            else:
                break  # a partial line waits in the spool for the rest of it
            self.done += cut - pos
            self.out.write(self.stream, t[pos:cut], end=self.done)
            pos = cut
        if pos:
            self.tail = t[pos:]

    def idle(self) -> None:
        """The pipe is empty: a good time to shrink the spool (or make one again)."""
        if self.unspooled:
            if time.monotonic() >= self._respool_at:
                self._compact()
        elif self.done - self.spool.base >= _SPOOL_IDLE:
            self._compact()

    def _compact(self) -> None:
        try:
            self.spool.replace(self.done, self.tail)
        except SyscallError as e:
            if not self._warned:
                log.error("%s: %s; keeping the spool as it is for now", self.spool.path, e)
                self._warned = True
            self._compact_at = self.done - self.spool.base + _SPOOL_MAX
            self._respool_at = time.monotonic() + _RESPOOL_S
            return
        if self.unspooled:
            log.info("%s: spooling again", self.spool.path)
            self.unspooled = False
        self._warned = False
        self._compact_at = _SPOOL_MAX

    def finish(self) -> None:
        """The stream has ended: log the rest and empty the spool (its base, the stream's end,
        stays: the next run's numbering goes on from it without looking into the log)."""
        self.convert(final=True)
        try:
            self.spool.replace(self.done, b"")
        except SyscallError as e:
            # What it holds is in the log: a later open finds the log's offset past it.
            log.error("%s: %s; left as it is", self.spool.path, e)

    def close(self) -> None:
        self.spool.close()


def _resume(fifo: str, stream: str, out: LogWriter) -> _Output:
    """The stream of the fifo at `fifo`, taken up where the log left it."""
    path = spool_path(fifo)
    _supersede(path)
    spool, done = _open_spool(path, stream, out)
    try:
        return _Output(stream, spool, done, out)
    except BaseException:
        spool.close()
        raise


#: the copier at work on each spool (by path).
_copiers: dict[str, Copier] = {}
_copiers_lock = threading.Lock()


def _supersede(spool: str) -> None:
    """Stop a copier still at work on this stream -- a previous run's, held by processes that
    outlived it with the fifo open -- before anyone else touches its spool."""
    with _copiers_lock:
        c = _copiers.pop(spool, None)
    if c is not None and c.thread.is_alive():
        log.warning("%s: taking the stream over from the previous run's copier", spool)
        c.stop()
        c.thread.join()


class Copier:
    """Copies one fifo, through its spool, line by line into the log and as it comes to
    attached clients, until every writer has closed it (or a later run takes it over)."""

    def __init__(self, fd: int, output: _Output, on_done: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self._output = output
        self._on_done = on_done
        self._stopping = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.thread = threading.Thread(target=self._run, name=f"log-{output.stream}", daemon=True)

    def start(self) -> None:
        with _copiers_lock:
            _copiers[self._output.spool.path] = self
        self.thread.start()

    def stop(self) -> None:
        """Stop after the step at hand, leaving the rest in the spool for whoever takes the
        stream over (no on_done: the run it copied is over)."""
        self._stopping.set()
        with self._wake_lock:
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)

    def _run(self) -> None:
        out = self._output
        try:
            out.convert()  # whole lines a previous kettled spooled but did not log
            poller = select.poll()
            poller.register(self._fd, select.POLLIN)
            poller.register(self._wake, select.POLLIN)
            while not self._stopping.is_set():
                n = out.pump(self._fd)
                if n == 0:
                    out.finish()
                    break
                if n is None:
                    out.idle()
                    poller.poll()
        except Exception:
            log.exception("%s: copying the container's %s failed", out.spool.path, out.stream)
        finally:
            with _copiers_lock:
                if _copiers.get(out.spool.path) is self:
                    del _copiers[out.spool.path]
            out.close()
            os.close(self._fd)
            with self._wake_lock:
                os.close(self._wake)
                self._wake = -1
            if self._on_done is not None and not self._stopping.is_set():
                self._on_done()


def drain(path: str, stream: str, out: LogWriter) -> None:
    """What a container that has exited left in its fifo (while kettled was away: the shim
    holds a read end open, so the pipe kept it) and in its spool, into the log."""
    fd = open_fifo(path)
    try:
        o = _resume(path, stream, out)
        try:
            o.convert()
            while o.pump(fd):
                pass
            o.finish()
        finally:
            o.close()
    finally:
        os.close(fd)


class ContainerIO:
    """One run of a container: its fifos in the bundle and the copiers into its log.

    The shim opens the fifos by path (as containerd's do); kettled opens its read ends first,
    non-blocking, so that neither side waits for the other.  Each output stream goes through
    its spool in the bundle (see Spool), which outlives kettled: a run kettled reconnects to
    resumes from it, and one that ended meanwhile is drained through it."""

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
        self._outputs: dict[str, _Output] = {}
        self._hub: Hub | None = None
        self._live_copiers = 0
        self._copiers_lock = threading.Lock()

    def _streams(self) -> dict[str, str]:
        found = {"stdout": self.stdout_path, "stderr": self.stderr_path}
        return {s: p for s, p in found.items() if p}

    def open(self) -> None:
        """Make the fifos and open our read ends (before the shim's Create), and take each
        stream up from its spool where the log left it."""
        if self.terminal:
            _want_terminal(self.bundle)
        try:
            for stream, path in self._streams().items():
                make_fifo(path)
                self._fds[stream] = open_fifo(path)
                self._outputs[stream] = _resume(path, stream, self.writer)
            if self.stdin_path:
                make_fifo(self.stdin_path)
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Start copying (once the shim holds the write ends, after its Create)."""
        h = self._hub = _acquire(self.bundle)
        if self.stdin_path:
            h.set_stdin(_open_stdin_writer(self.stdin_path))
        self._live_copiers = len(self._fds)
        for stream, fd in self._fds.items():
            output = self._outputs.pop(stream)
            output.hub = h
            self.copiers.append(Copier(fd, output, self._copier_done))
        self._fds.clear()
        h.run_started()
        if not self.copiers:
            self._run_ended()
        for c in self.copiers:
            c.start()

    def _copier_done(self) -> None:
        with self._copiers_lock:
            self._live_copiers -= 1
            last = self._live_copiers == 0
        if last:
            self._run_ended()

    def _run_ended(self) -> None:
        if self._hub is not None:
            self._hub.run_ended()

    def close_stdin(self) -> None:
        """The run is over (or the client asked): let go of the container's stdin."""
        if self._hub is not None:
            self._hub.close_stdin()

    def close(self) -> None:
        """Close read ends and spools never handed to a copier (a failed start); the spools
        stay for the next run."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for output in self._outputs.values():
            output.close()
        self._outputs.clear()

    def wait_drained(self, timeout: float) -> None:
        """Called once the container's process has exited (or its start failed): the run is
        over, so kettled's end of its stdin goes too."""
        for c in self.copiers:
            c.thread.join(timeout)
        h, self._hub = self._hub, None
        if h is not None:
            h.close_stdin()
            h.run_ended()  # the copiers may still be held by a process's orphans
            _release(h)

    def drain_exited(self) -> None:
        """What a container that exited while kettled was away left in its fifos and spools."""
        for stream, path in self._streams().items():
            drain(path, stream, self.writer)


def _open_stdin_writer(path: str) -> int:
    """kettled's write end of the container's stdin fifo.  The shim holds the read end from
    its Create on, so a non-blocking open cannot fail with ENXIO; writes then block."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:
            # Nobody reads it any more: the shim saw EOF while no kettled held the write end
            # (kettled restarted), so the container's stdin is closed for good.
            log.warning("%s: the container's stdin was closed while kettled was away", path)
            return -1
        raise SyscallError("open", e.errno or 0, path, "stdin fifo") from None
    os.set_blocking(fd, True)
    return fd


def _want_terminal(bundle: str) -> None:
    """process.terminal must be true in config.json for the runtime to make a pty: older
    specs (written before spec.build honoured the tty flag) get it set here."""
    import json

    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        spec = json.load(f)
    proc = spec.get("process")
    if not isinstance(proc, dict) or proc.get("terminal"):
        return
    proc["terminal"] = True
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, path)
