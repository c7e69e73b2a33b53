"""A container's output through its spool into the log: splice(2), commit offsets, resuming
after kettled is killed at any instant (no byte lost, none logged twice).  No daemon, no root:
fifos and forked copier processes in a temp dir."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import random
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kettle.daemon import logs, stdio
from kettle.errors import SyscallError
from kettle.syscalls import splice as splicemod

STREAMS = ("stdout", "stderr")
HEADER = 16  # a spool's header: magic and base


# -- helpers -----------------------------------------------------------------------------------


class Shim:
    """The shim's side of a container's output fifos: a read end of its own on each (so the
    pipe keeps what is written while no copier reads) and, until closed, the write ends."""

    def __init__(self, bundle: Path, streams: tuple[str, ...] = STREAMS) -> None:
        self.bundle = bundle
        self.keep: dict[str, int] = {}
        self.w: dict[str, int] = {}
        for s in streams:
            path = str(bundle / s)
            stdio.make_fifo(path)
            self.keep[s] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.w[s] = os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def write(self, stream: str, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.w[stream], view) :]

    def close_writers(self) -> None:
        for fd in self.w.values():
            os.close(fd)
        self.w.clear()

    def close(self) -> None:
        self.close_writers()
        for fd in self.keep.values():
            os.close(fd)
        self.keep.clear()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    b = tmp_path / "bundle"
    b.mkdir()
    return b


@pytest.fixture
def shim(bundle: Path) -> Iterator[Shim]:
    s = Shim(bundle)
    try:
        yield s
    finally:
        s.close()


def _log(bundle: Path) -> str:
    return str(bundle.parent / "c-json.log")


def _entries(path: str) -> list[dict[str, object]]:
    return logs.read_entries(path, -1)[0]


def _stream_bytes(path: str, stream: str) -> bytes:
    return b"".join(str(e["log"]).encode() for e in _entries(path) if e["stream"] == stream)


def _check_offsets(path: str, stream: str, data: bytes) -> bytes:
    """The stream's entries rebuilt; each entry's offset must end its own text, and follow on
    from the entry before (nothing lost, nothing twice).  Returns the logged bytes."""
    got = [e for e in _entries(path) if e["stream"] == stream]
    if not got:
        return b""
    first = got[0]
    pos = int(str(first["off"])) - len(str(first["log"]).encode())
    for e in got:
        text = str(e["log"]).encode()
        assert data[pos : pos + len(text)] == text, f"{stream}: entry at {pos} is not the stream's"
        pos += len(text)
        assert e["off"] == pos, f"{stream}: offset {e['off']} where {pos} was due"
    return data[int(str(first["off"])) - len(str(first["log"]).encode()) : pos]


def _spool(bundle: Path, stream: str) -> tuple[int, bytes]:
    raw = (bundle / f"{stream}.spool").read_bytes()
    magic, base = struct.unpack("<8sQ", raw[:HEADER])
    assert magic == b"kspool\x00\x01"
    return base, raw[HEADER:]


def _run_io(bundle: Path, log_path: str, max_size: int = 1 << 30, max_file: int = 5) -> None:
    """One kettled's copy of the container's output: until the end of its streams."""
    w = logs.LogWriter(log_path, max_size, max_file)
    io = stdio.ContainerIO(str(bundle), w, stdin=False, terminal=not (bundle / "stderr").exists())
    io.open()
    io.start()
    for c in io.copiers:
        c.thread.join()
    io.wait_drained(0)
    w.close()


def _fork(fn: Callable[[], None]) -> int:
    """fn in a child process that always ends by os._exit: 0 when fn returned."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def _reap(pid: int) -> int:
    """The child's wait status (after a SIGKILL if it still runs)."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    return status


def _workload(rng: random.Random, stream: str, size: int) -> bytes:
    """Numbered lines of many lengths: short, UTF-8, longer than an entry's 16 KiB, blank."""
    parts: list[bytes] = []
    total, i = 0, 0
    while total < size:
        kind = rng.random()
        if kind < 0.02:
            body = "é€z" * rng.randint(5500, 7000)  # over 16 KiB, cut inside no character
        elif kind < 0.05:
            body = ""
        else:
            body = "ü" * rng.randint(0, 3) + "x" * rng.randint(0, 200)
        line = f"{stream} {i:06d} {body}\n".encode()
        parts.append(line)
        total += len(line)
        i += 1
    parts.append(f"{stream} the end, no newline".encode())
    return b"".join(parts)


# -- splice(2) ---------------------------------------------------------------------------------


def test_splice_moves_pipe_bytes_into_a_file_at_an_offset(tmp_path: Path) -> None:
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    f = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(w, b"hello")
        assert splicemod.splice(r, f, 100, offset_out=3, nonblock=True) == 5
        assert (tmp_path / "out").read_bytes() == b"\0\0\0hello"
        assert os.lseek(f, 0, os.SEEK_CUR) == 0  # the offset given, the file's own untouched
        assert splicemod.splice(r, f, 100, offset_out=8, nonblock=True) is None  # empty now
        os.close(w)
        w = -1
        assert splicemod.splice(r, f, 100, offset_out=8, nonblock=True) == 0  # the end
    finally:
        for fd in (r, w, f):
            if fd >= 0:
                os.close(fd)


def test_splice_failure_is_a_syscall_error_naming_the_path(tmp_path: Path) -> None:
    a = os.open(tmp_path / "a", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    b = os.open(tmp_path / "b", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        with pytest.raises(SyscallError) as e:
            splicemod.splice(a, b, 10, path="/x/spool")  # neither end is a pipe
        assert e.value.call == "splice" and e.value.errno == errno.EINVAL
        assert "/x/spool" in str(e.value)
    finally:
        os.close(a)
        os.close(b)


# -- commit offsets in the log -----------------------------------------------------------------


def test_entries_carry_their_end_offset_and_pieces_each_their_own(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    w = logs.LogWriter(path, max_size=1 << 20)
    w.write("stdout", b"abc\n", end=104)
    w.write("stdout", b"y" * 40000 + b"\n", end=40105)
    w.write("stderr", b"plain\n")  # no offset: none recorded
    w.close()
    got = [(e["stream"], len(str(e["log"])), e.get("off")) for e in _entries(path)]
    assert got == [
        ("stdout", 4, 104),
        ("stdout", 16384, 16488),
        ("stdout", 16384, 32872),
        ("stdout", 7233, 40105),
        ("stderr", 6, None),
    ]
    assert logs.last_offsets(path, STREAMS) == {"stdout": 40105}  # stderr's newest has none


def test_last_offsets_finds_each_streams_newest_across_rotated_files(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    w = logs.LogWriter(path, max_size=400, max_file=10)
    w.write("stderr", b"rare\n", end=5)
    for i in range(1, 41):
        w.write("stdout", f"line {i:03d}\n".encode(), end=9 * i)
    assert w.last_offsets(STREAMS) == {"stdout": 360, "stderr": 5}
    assert w.last_offsets(["stdout"]) == {"stdout": 360}
    w.close()
    assert len(list(tmp_path.iterdir())) > 3  # stderr's entry is files away from the newest
    assert logs.last_offsets(path, ["other"]) == {}
    assert logs.last_offsets(str(tmp_path / "none"), STREAMS) == {}


def test_a_torn_last_entry_commits_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    w = logs.LogWriter(path)
    w.write("stdout", b"one\n", end=4)
    w.close()
    whole = Path(path).read_bytes()
    with open(path, "ab") as f:
        f.write(whole[:-3].replace(b'"off":4', b'"off":9'))  # killed mid-write: no "}\n"
    w = logs.LogWriter(path)  # ends the torn line
    assert w.last_offsets(["stdout"]) == {"stdout": 4}
    w.write("stdout", b"two\n", end=8)
    w.close()
    assert [e["log"] for e in _entries(path)] == ["one\n", "two\n"]


# -- copying through the spool -----------------------------------------------------------------


def test_a_partial_line_waits_in_the_spool_and_attached_clients_see_it_at_once(
    bundle: Path, shim: Shim
) -> None:
    log_path = _log(bundle)
    w = logs.LogWriter(log_path)
    io = stdio.ContainerIO(str(bundle), w, stdin=False, terminal=False)
    att = stdio.attach(str(bundle), wait_for_start=True)
    try:
        io.open()
        io.start()
        shim.write("stdout", b"first\n/ # ")
        got = b""
        while got != b"first\n/ # ":
            item = att.get(timeout=10)
            assert item is not None
            got += item[1]
        # The prompt reached the client; the log has the whole line only, the prompt waits.
        while _stream_bytes(log_path, "stdout") != b"first\n":
            time.sleep(0.01)
        base, data = _spool(bundle, "stdout")
        assert data[6 - base :] == b"/ # "
        shim.write("stdout", b"ls\n")
        shim.close_writers()
        for c in io.copiers:
            c.thread.join(10)
            assert not c.thread.is_alive()
        assert [e["log"] for e in _entries(log_path)] == ["first\n", "/ # ls\n"]
        assert att.get(timeout=10) == ("stdout", b"ls\n")
    finally:
        att.close()
        io.wait_drained(10)
        w.close()
    assert _spool(bundle, "stdout") == (13, b"")  # emptied at the end, its offset kept
    assert _spool(bundle, "stderr") == (0, b"")


def test_the_last_partial_line_is_logged_as_is_and_a_line_without_end_in_pieces(
    bundle: Path, shim: Shim
) -> None:
    long = ("ab€" * 12000).encode()  # 60 000 bytes, never a newline
    shim.write("stdout", long[:30000])
    shim.write("stderr", b"no newline")
    t = _fork(lambda: shim.write("stdout", long[30000:]))  # more than the pipe holds
    shim.close_writers()
    _run_io(bundle, _log(bundle))
    assert os.WEXITSTATUS(_reap(t)) == 0
    out = [str(e["log"]).encode() for e in _entries(_log(bundle)) if e["stream"] == "stdout"]
    assert b"".join(out) == long
    assert all(len(p) <= 16 * 1024 for p in out) and len(out) == 4
    assert _stream_bytes(_log(bundle), "stderr") == b"no newline"


def test_the_spool_stays_small_while_much_goes_through(bundle: Path, shim: Shim) -> None:
    log_path = _log(bundle)
    data = b"".join(f"{i:07d} {'z' * 90}\n".encode() for i in range(40000))  # ~4 MiB
    seen: list[int] = []
    real = stdio.Spool.take

    def take(self: stdio.Spool, fifo: int) -> int | None:
        seen.append(self.end - self.base)
        return real(self, fifo)

    stdio.Spool.take = take  # type: ignore[method-assign]
    try:
        feeder = _fork(lambda: shim.write("stdout", data))
        shim.close_writers()
        _run_io(bundle, log_path)
        assert os.WEXITSTATUS(_reap(feeder)) == 0
    finally:
        stdio.Spool.take = real  # type: ignore[method-assign]
    assert _stream_bytes(log_path, "stdout") == data
    assert max(seen) <= stdio._SPOOL_MAX + stdio._SPLICE_MAX
    assert max(seen) < len(data) // 2


def test_a_new_run_goes_on_with_the_numbering_and_so_does_a_lost_spool(
    bundle: Path, shim: Shim
) -> None:
    log_path = _log(bundle)
    shim.write("stdout", b"run one\n")
    shim.close_writers()
    _run_io(bundle, log_path)
    shim.close()
    second = Shim(bundle)
    try:
        second.write("stdout", b"run two\n")
        second.close_writers()
        _run_io(bundle, log_path)
    finally:
        second.close()
    assert _spool(bundle, "stdout") == (16, b"")
    (bundle / "stdout.spool").unlink()  # the state dir went with a reboot; the log stayed
    third = Shim(bundle)
    try:
        third.write("stdout", b"run three\n")
        third.close_writers()
        _run_io(bundle, log_path)
    finally:
        third.close()
    assert [(e["log"], e["off"]) for e in _entries(log_path)] == [
        ("run one\n", 8),
        ("run two\n", 16),
        ("run three\n", 26),
    ]


def test_a_bad_spool_is_replaced_and_said(
    bundle: Path, shim: Shim, caplog: pytest.LogCaptureFixture
) -> None:
    (bundle / "stdout.spool").write_bytes(b"junk")
    shim.write("stdout", b"fine\n")
    shim.close_writers()
    _run_io(bundle, _log(bundle))
    assert "not an output spool" in caplog.text
    assert _stream_bytes(_log(bundle), "stdout") == b"fine\n"


def test_a_run_that_ended_while_kettled_was_away_is_drained_from_spool_and_fifo(
    bundle: Path, shim: Shim
) -> None:
    log_path = _log(bundle)
    w = logs.LogWriter(log_path)
    w.write("stdout", b"logged\n", end=7)
    w.close()
    # Spooled before the kill, the log has the first line of it; the pipe kept the rest.
    head = struct.pack("<8sQ", b"kspool\x00\x01", 0)
    (bundle / "stdout.spool").write_bytes(head + b"logged\nspooled ")
    shim.write("stdout", b"half\nin the pipe")
    shim.close_writers()
    w = logs.LogWriter(log_path)
    stdio.ContainerIO(str(bundle), w, stdin=False, terminal=False).drain_exited()
    w.close()
    assert [e["log"] for e in _entries(log_path)] == ["logged\n", "spooled half\n", "in the pipe"]
    assert _spool(bundle, "stdout") == (31, b"")


def test_a_later_run_takes_the_stream_over_from_a_copier_still_held_open(
    bundle: Path, shim: Shim
) -> None:
    """Orphans of a run may keep its fifo open past the run's end: the copier of the next run
    takes over from it, and the log has each line once."""
    log_path = _log(bundle)
    w1 = logs.LogWriter(log_path)
    io1 = stdio.ContainerIO(str(bundle), w1, stdin=False, terminal=False)
    io1.open()
    io1.start()
    shim.write("stdout", b"a\nb")
    while _stream_bytes(log_path, "stdout") != b"a\n":
        time.sleep(0.01)
    io1.wait_drained(0.05)  # the run is over, its copier held by the open writer
    w1.close()
    assert all(c.thread.is_alive() for c in io1.copiers)
    w2 = logs.LogWriter(log_path)
    io2 = stdio.ContainerIO(str(bundle), w2, stdin=False, terminal=False)
    io2.open()
    assert not any(c.thread.is_alive() for c in io1.copiers)
    io2.start()
    shim.write("stdout", b"c\n")
    shim.close_writers()
    for c in io2.copiers:
        c.thread.join(10)
    io2.wait_drained(0)
    w2.close()
    assert [e["log"] for e in _entries(log_path)] == ["a\n", "bc\n"]


@pytest.mark.parametrize("from_start", [False, True], ids=["while-running", "from-start"])
def test_without_a_spool_output_still_flows_and_spooling_comes_back(
    bundle: Path,
    shim: Shim,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    from_start: bool,
) -> None:
    """A full disk: no spool can be written (or spliced to), at start or later on."""
    caplog.set_level(logging.INFO, logger="kettled")
    real = splicemod.splice
    failing = [from_start]

    def full_disk(*args: object, **kw: object) -> int | None:
        if failing[0]:
            raise SyscallError("splice", errno.ENOSPC, "spool")
        return real(*args, **kw)  # type: ignore[arg-type]

    real_write = stdio._write_spool

    def no_room(path: str, base: int, data: bytes) -> int:
        if failing[0]:
            raise SyscallError("write", errno.ENOSPC, path)
        return real_write(path, base, data)

    monkeypatch.setattr(stdio, "splice", full_disk)
    monkeypatch.setattr(stdio, "_write_spool", no_room)
    monkeypatch.setattr(stdio, "_RESPOOL_S", 0.0)
    log_path = _log(bundle)
    w = logs.LogWriter(log_path)
    io = stdio.ContainerIO(str(bundle), w, stdin=False, terminal=False)
    io.open()
    io.start()
    failing[0] = True
    shim.write("stdout", b"while full\npart")
    while _stream_bytes(log_path, "stdout") != b"while full\n":
        time.sleep(0.01)
    failing[0] = False
    shim.write("stdout", b"ial\n")
    while _stream_bytes(log_path, "stdout") != b"while full\npartial\n":
        time.sleep(0.01)
    shim.write("stdout", b"spooled\n")
    shim.close_writers()
    for c in io.copiers:
        c.thread.join(10)
    io.wait_drained(0)
    w.close()
    assert _check_offsets(log_path, "stdout", b"while full\npartial\nspooled\n")
    assert _stream_bytes(log_path, "stdout") == b"while full\npartial\nspooled\n"
    said = "the stream goes unspooled" if from_start else "reading the fifo without it"
    assert said in caplog.text
    assert "spooling again" in caplog.text
    assert _spool(bundle, "stdout") == (27, b"")


# -- kettled killed at any instant -------------------------------------------------------------


class _Crash:
    """Kill this process at its `at`-th step: before or after each splice, log write or
    rename, or in the middle of a log write (a torn entry)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps = 0

    def step(self) -> bool:
        self.steps += 1
        return self.steps == self.at

    def die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        real_splice, real_write_all, real_rename = splicemod.splice, logs._write_all, os.rename

        def splice(*args: object, **kw: object) -> int | None:
            if self.step():
                self.die()
            n = real_splice(*args, **kw)  # type: ignore[arg-type]
            if self.step():
                self.die()
            return n

        def write_all(fd: int, data: bytes) -> None:
            if self.step():
                self.die()
            if self.step():
                real_write_all(fd, data[: len(data) // 2])
                self.die()
            real_write_all(fd, data)
            if self.step():
                self.die()

        def rename(a: str, b: str) -> None:
            if self.step():
                self.die()
            real_rename(a, b)
            if self.step():
                self.die()

        vars(stdio)["splice"] = splice  # the child's own copy of the module
        logs._write_all = write_all
        os.rename = rename  # type: ignore[assignment]


@pytest.fixture
def small_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Splices of a few hundred bytes and a spool replaced every few, so that a short stream
    passes every kind of step many times (forked children inherit this)."""
    monkeypatch.setattr(stdio, "_SPLICE_MAX", 300)
    monkeypatch.setattr(stdio, "_SPOOL_MAX", 700)
    monkeypatch.setattr(stdio, "_SPOOL_IDLE", 200)


@pytest.mark.parametrize("max_size", [1 << 30, 3000], ids=["one-file", "rotating"])
@pytest.mark.usefixtures("small_spool")
def test_a_kill_at_every_step_loses_and_repeats_nothing(tmp_path: Path, max_size: int) -> None:
    rng = random.Random(5)
    data = b"".join(
        [
            b"short\n",
            "é€ ünïcödé\n".encode(),
            b"x" * 17000 + b"\n",  # more than one entry holds
            *[f"line {i} {'y' * rng.randint(0, 120)}\n".encode() for i in range(30)],
            b"partial at the end",
        ]
    )
    at = 0
    while True:
        at += 1
        case = tmp_path / f"k{at}"
        b = case / "bundle"
        b.mkdir(parents=True)
        s = Shim(b, ("stdout",))
        (b / "config.json").write_text(json.dumps({"process": {"terminal": True}}))
        log_path = str(case / "c-json.log")
        try:
            s.write("stdout", data)
            s.close_writers()  # all of it in the pipe; the shim's read end keeps it there
            crash = _Crash(at)

            def crashing(crash: _Crash = crash, b: Path = b, log_path: str = log_path) -> None:
                crash.install()
                _run_io(b, log_path, max_size, max_file=20)

            status = _reap_when_done(_fork(crashing))
            reached = os.WIFSIGNALED(status)
            if not reached:
                assert os.WEXITSTATUS(status) == 0
            status = _reap_when_done(_fork(functools.partial(_run_io, b, log_path, max_size, 20)))
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            assert _check_offsets(log_path, "stdout", data) == data, f"kill at step {at}"
            assert _stream_bytes(log_path, "stdout") == data, f"kill at step {at}"
            assert _spool(b, "stdout") == (len(data), b"")
        finally:
            s.close()
        if not reached:
            break  # the run had fewer steps than this: every one was tried
    assert at > 100


def _reap_when_done(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.parametrize("max_size", [1 << 30, 200_000], ids=["one-file", "rotating"])
@pytest.mark.usefixtures("small_spool")
def test_random_kills_while_a_container_writes_lose_and_repeat_nothing(
    bundle: Path, shim: Shim, max_size: int
) -> None:
    """kettled SIGKILLed at random moments, again and again, while a writer feeds both
    streams; each kettled after it resumes from the spools and the log."""
    rng = random.Random(max_size)
    log_path = _log(bundle)
    data = {s: _workload(rng, s, 1_500_000) for s in STREAMS}

    def feed() -> None:
        r = random.Random(1)
        pos = dict.fromkeys(STREAMS, 0)
        while any(pos[s] < len(data[s]) for s in STREAMS):
            for s in STREAMS:
                n = r.choice([1, 7, 100, 1000, 5000, 70000])
                shim.write(s, data[s][pos[s] : pos[s] + n])
                pos[s] += n
            if r.random() < 0.05:
                time.sleep(0.002)  # quiet moments: the spool is compacted as idle

    feeder = _fork(feed)
    shim.close_writers()  # the feeder has them: the end of the streams is its exit
    kills = 0
    for _ in range(3000):
        copier = _fork(lambda: _run_io(bundle, log_path, max_size, max_file=3))
        time.sleep(rng.uniform(0, 0.01))
        status = _reap(copier)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0
            break
        kills += 1
    else:
        pytest.fail("the streams never ended")
    assert os.WEXITSTATUS(_reap_when_done(feeder)) == 0
    assert kills >= 20
    for s in STREAMS:
        logged = _check_offsets(log_path, s, data[s])
        if max_size > len(data[s]) * 3:
            assert logged == data[s]
        else:  # rotation dropped the oldest: what is left is the stream's end, whole
            assert data[s].endswith(logged) and len(logged) > 1000
        assert _spool(bundle, s) == (len(data[s]), b"")
