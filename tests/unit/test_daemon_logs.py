"""Container logs (rotation, reading, following), time parsing and event filters: no daemon."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kettle.api import kettle_pb as pb
from kettle.cli.commands.events import event_json, text_line
from kettle.cli.commands.logs import parse_tail
from kettle.cli.timefmt import format_ns, parse_time
from kettle.daemon import logs
from kettle.daemon.bus import Event, EventBus
from kettle.daemon.config import Config
from kettle.daemon.services import events as evsvc
from kettle.errors import InvalidArgument

S = 1_000_000_000


def _files(path: Path) -> list[Path]:
    return sorted(path.parent.iterdir())


def _texts(entries: list[dict[str, object]]) -> list[str]:
    return [str(e["log"]) for e in entries]


def _line(i: int) -> bytes:
    return f"line {i:05d} {'x' * 40}\n".encode()


def _entry_size(path: Path) -> int:
    """Bytes of one _line() entry on disk (they are all as long)."""
    with path.open("rb") as f:
        return len(f.readline())


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """The writer's clock, set by the test (seconds)."""
    now = [1_700_000_000 * S]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])

    def set_to(seconds: int) -> None:
        now[0] = seconds * S

    return set_to


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("1k", 1024), ("1.5k", 1536), ("10m", 10 << 20), ("10MiB", 10 << 20),
     ("2g", 2 << 30), ("3KB", 3072), ("7b", 7)],
)  # fmt: skip
def test_sizes_are_dockers(text: str, size: int) -> None:
    assert logs.parse_size(text, "log-opt max-size") == size


@pytest.mark.parametrize("text", ["", "10x", "-1k", "0", "k", "1.k", "0k"])
def test_bad_sizes_are_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidArgument, match="log-opt max-size"):
        logs.parse_size(text, "log-opt max-size")


def test_log_opts_are_validated(tmp_path: Path) -> None:
    logs.validate_log_opts({"max-size": "1k", "max-file": "2"})
    with pytest.raises(InvalidArgument, match="log-opt 'compress': unknown option"):
        logs.validate_log_opts({"compress": "true"})
    with pytest.raises(InvalidArgument, match="log-opt max-file '0'"):
        logs.validate_log_opts({"max-file": "0"})
    with pytest.raises(InvalidArgument, match="log-opt max-file 'two'"):
        logs.validate_log_opts({"max-file": "two"})
    with pytest.raises(InvalidArgument, match="log-opt max-size '1q'"):
        logs.open_writer(str(tmp_path / "log"), {"max-size": "1q"}, Config())
    assert not (tmp_path / "log").exists()


def test_writer_takes_kettled_defaults_then_log_opts(tmp_path: Path) -> None:
    cfg = Config(log_max_size="2k", log_max_file=5)
    w = logs.open_writer(str(tmp_path / "a"), {}, cfg)
    assert (w.max_size, w.max_file) == (2048, 5)
    w.close()
    w = logs.open_writer(str(tmp_path / "b"), {"max-file": "2"}, cfg)
    assert (w.max_size, w.max_file) == (2048, 2)
    w.close()
    with pytest.raises(InvalidArgument, match=r"kettled config logs\.max_size 'lots'"):
        logs.open_writer(str(tmp_path / "c"), {}, Config(log_max_size="lots"))


# -- writing and rotation ---------------------------------------------------------------------


@pytest.mark.parametrize("max_file", [1, 2, 4])
def test_rotation_bounds_the_files_and_keeps_the_newest(tmp_path: Path, max_file: int) -> None:
    path = tmp_path / "c-json.log"
    w = logs.LogWriter(str(path), max_size=1024, max_file=max_file)
    for i in range(500):
        w.write("stdout", _line(i))
    w.close()
    names = [p.name for p in _files(path)]
    assert names == ["c-json.log"] + [f"c-json.log.{i}" for i in range(1, max_file)]
    assert all(p.stat().st_size <= 1024 for p in _files(path))
    entries, offset = logs.read_entries(str(path), -1)
    texts = _texts(entries)
    # The newest lines, contiguous and in order, up to the very last.
    first = int(texts[0].split()[1])
    assert texts == [_line(i).decode() for i in range(first, 500)]
    per_file = 1024 // _entry_size(path)
    assert len(texts) >= (max_file - 1) * per_file + 1
    assert offset == path.stat().st_size
    assert _texts(logs.read_entries(str(path), 3)[0]) == [
        _line(i).decode() for i in (497, 498, 499)
    ]


def test_reopen_prunes_files_past_a_smaller_max_file_and_ends_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    w = logs.LogWriter(str(path), max_size=512, max_file=4)
    for i in range(100):
        w.write("stdout", _line(i))
    w.close()
    assert len(_files(path)) == 4
    with path.open("ab") as f:
        f.write(b'{"stream":"stdout","ti')  # kettled killed mid-write
    w = logs.LogWriter(str(path), max_size=512, max_file=2)
    w.write("stderr", b"after\n")
    w.close()
    assert [p.name for p in _files(path)] == ["c-json.log", "c-json.log.1"]
    entries, _ = logs.read_entries(str(path), 1)
    assert [(e["stream"], e["log"]) for e in entries] == [("stderr", "after\n")]


def test_a_long_line_is_cut_into_pieces_that_rebuild_it(tmp_path: Path) -> None:
    path = tmp_path / "log"
    w = logs.LogWriter(str(path), max_size=1024, max_file=100)
    text = ("é" * 700 + "€" * 300 + "z" * 5) + "\n"
    w.write("stdout", text.encode())
    w.close()
    entries, _ = logs.read_entries(str(path), -1)
    assert len(entries) > 3
    assert "".join(_texts(entries)) == text
    assert all(not t.endswith("\n") for t in _texts(entries)[:-1])
    assert all(p.stat().st_size <= 1024 for p in _files(path))


def test_lines_are_json_with_stream_time_and_text(tmp_path: Path, clock: Any) -> None:
    path = tmp_path / "log"
    w = logs.LogWriter(str(path))
    w.write("stderr", b'say "hi"\t\xff\n')
    w.close()
    assert json.loads(path.read_bytes()) == {
        "stream": "stderr",
        "time_ns": 1_700_000_000 * S,
        "log": 'say "hi"\t\ufffd\n',
    }


def test_writes_after_close_are_dropped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = logs.LogWriter(str(tmp_path / "log"))
    w.close()
    with caplog.at_level(logging.ERROR, logger="kettled"):
        w.write("stdout", b"late\n")
    assert "written after close" in caplog.text
    assert (tmp_path / "log").read_bytes() == b""


# -- reading -----------------------------------------------------------------------------------


def _req(**kw: Any) -> pb.LogsRequest:
    kw.setdefault("tail", -1)
    return pb.LogsRequest(id="c", **kw)


def _timed_log(path: Path, clock: Callable[[int], None]) -> None:
    """Lines stamped 100..119 s across rotated files."""
    w = logs.LogWriter(str(path), max_size=300, max_file=20)
    for i in range(20):
        clock(100 + i)
        w.write("stdout" if i % 2 else "stderr", f"t{100 + i}\n".encode())
    w.close()
    assert len(_files(path)) > 2


def test_since_until_and_tail_read_across_files(tmp_path: Path, clock: Any) -> None:
    path = tmp_path / "log"
    _timed_log(path, clock)

    def read(**kw: Any) -> list[str]:
        return [t.strip() for t in _texts(list(logs.stream(str(path), _req(**kw), None)))]

    assert read() == [f"t{i}" for i in range(100, 120)]
    assert read(since_ns=110 * S) == [f"t{i}" for i in range(110, 120)]
    assert read(until_ns=103 * S) == ["t100", "t101", "t102"]
    assert read(since_ns=105 * S, until_ns=108 * S) == ["t105", "t106", "t107"]
    assert read(tail=2) == ["t118", "t119"]
    assert read(tail=0) == []
    # tail counts inside the window.
    assert read(tail=2, until_ns=110 * S) == ["t108", "t109"]
    assert read(tail=5, since_ns=117 * S) == ["t117", "t118", "t119"]
    assert read(since_ns=200 * S) == []
    # follow of a container that is not running: what there is.
    assert read(follow=True, tail=1) == ["t119"]


def test_no_log_yet_reads_empty(tmp_path: Path) -> None:
    assert list(logs.stream(str(tmp_path / "none"), _req(follow=True), threading.Event())) == []


def test_damaged_lines_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log"
    path.write_bytes(b'{"stream":"stdout","time_ns":1,"log":"a\\n"}\nnot json\n')
    with caplog.at_level(logging.WARNING, logger="kettled"):
        assert _texts(list(logs.stream(str(path), _req(), None))) == ["a\n"]
    assert "damaged line" in caplog.text


def _follow(path: Path, done: threading.Event, **kw: Any) -> Iterator[dict[str, object]]:
    return logs.stream(str(path), _req(follow=True, **kw), done)


@pytest.mark.parametrize("max_file", [1, 2, 5])
def test_follow_survives_rotations_while_the_reader_is_behind(
    tmp_path: Path, max_file: int
) -> None:
    """The generator is suspended between entries while the writer rotates (up to
    max_file - 1 times, and once more: the file the reader holds is drained even once gone)."""
    path = tmp_path / "log"
    w = logs.LogWriter(str(path), max_size=512, max_file=max_file)
    done = threading.Event()
    w.write("stdout", _line(0))
    per_file = 512 // _entry_size(path)
    gen = _follow(path, done)
    got = [str(next(gen)["log"])]
    n = 1
    # No rotation, one, several, and max_file: the most that cannot lose a line whatever the
    # held file already had.
    counts = [1, 3, per_file, per_file * max_file, per_file * (max_file - 1) + 2, per_file - 1]
    for round_, count in enumerate(counts * 2):
        for _ in range(count):
            w.write("stdout" if round_ % 2 else "stderr", _line(n))
            n += 1
        got += [str(next(gen)["log"]) for _ in range(count)]
    w.close()
    done.set()
    got += _texts(list(gen))
    assert got == [_line(i).decode() for i in range(n)]


def test_follow_lost_behind_rotation_skips_ahead_without_duplicates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log"
    w = logs.LogWriter(str(path), max_size=512, max_file=2)
    done = threading.Event()
    gen = _follow(path, done, tail=-1)
    w.write("stdout", _line(0))
    first = next(gen)
    with caplog.at_level(logging.WARNING, logger="kettled"):
        for i in range(1, 200):
            w.write("stdout", _line(i))
        w.close()
        done.set()
        rest = _texts(list(gen))
    numbers = [int(t.split()[1]) for t in [str(first["log"]), *rest]]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 199
    assert len(numbers) < 200
    assert "fell behind rotation" in caplog.text


def test_follow_with_a_writer_thread_gets_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    w = logs.LogWriter(str(path), max_size=700, max_file=2)
    done = threading.Event()
    gen = _follow(path, done, tail=-1)
    consumed = threading.Semaphore(0)
    total = 150

    def writer() -> None:
        # A batch (5 lines, about 500 bytes) rotates at most once: the reader never falls behind
        # by more than max_file can keep.
        for i in range(total):
            w.write("stdout", _line(i))
            if i % 5 == 4 and not consumed.acquire(timeout=30):
                break  # the reader lost lines: fail below rather than hang
        w.close()
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    got: list[str] = []
    for entry in gen:
        got.append(str(entry["log"]))
        if len(got) % 5 == 0:
            consumed.release()
    t.join(30)
    assert not t.is_alive()
    assert got == [_line(i).decode() for i in range(total)]


def test_follow_stops_at_until_and_when_the_client_goes(tmp_path: Path, clock: Any) -> None:
    path = tmp_path / "log"
    w = logs.LogWriter(str(path))
    clock(10)
    w.write("stdout", b"a\n")
    done = threading.Event()
    gen = logs.stream(str(path), _req(follow=True, until_ns=20 * S), done)
    assert next(gen)["log"] == "a\n"
    clock(20)
    w.write("stdout", b"b\n")
    assert list(gen) == []  # ended at the first entry past until
    alive = [True]
    gen = logs.stream(str(path), _req(follow=True, tail=0), done, active=lambda: alive[0])
    alive[0] = False
    assert list(gen) == []
    w.close()


# -- time --------------------------------------------------------------------------------------

NOW = 1_800_000_000 * S


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("10m", NOW - 600 * S),
        ("1h30m", NOW - 5400 * S),
        ("45s", NOW - 45 * S),
        ("1.5h", NOW - 5400 * S),
        ("250ms", NOW - S // 4),
        ("-10s", NOW + 10 * S),
        ("1700000000", 1_700_000_000 * S),
        ("1700000000.5", 1_700_000_000 * S + S // 2),
        ("1700000000.000000001", 1_700_000_000 * S + 1),
        ("2026-11-25T10:00:00Z", 1_795_600_800 * S),
        ("2026-11-25T10:00:00.123456789Z", 1_795_600_800 * S + 123_456_789),
        ("2026-11-25T10:00:00.5z", 1_795_600_800 * S + S // 2),
        ("2026-11-25T11:30:00+01:30", 1_795_600_800 * S),
        ("2026-11-25T08:00:00-0200", 1_795_600_800 * S),
        ("2026-11-25T10:00Z", 1_795_600_800 * S),
        ("2026-11-25Z", 1_795_564_800 * S),
    ],
)
def test_times_in_dockers_forms(text: str, ns: int) -> None:
    assert parse_time(text, "--since", now_ns=NOW) == ns


def test_times_without_a_zone_are_local() -> None:
    expected = int(time.mktime((2026, 11, 25, 10, 0, 0, 0, 0, -1))) * S
    assert parse_time("2026-11-25T10:00:00", "--until", now_ns=NOW) == expected
    day = int(time.mktime((2026, 11, 25, 0, 0, 0, 0, 0, -1))) * S
    assert parse_time("2026-11-25", "--until", now_ns=NOW) == day


@pytest.mark.parametrize(
    "text", ["yesterday", "10x", "1h30", "2026-13-01", "2026-11-25T25:00Z", ""]
)
def test_bad_times_are_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(InvalidArgument, match=f"--until '{text}'"):
        parse_time(text, "--until", now_ns=NOW)


def test_times_print_as_rfc3339_nano_utc() -> None:
    assert format_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_ns(1_795_600_800 * S + 123_456_789) == "2026-11-25T10:00:00.123456789Z"
    assert format_ns(1_795_600_800 * S + 5) == "2026-11-25T10:00:00.000000005Z"


def test_tail_values() -> None:
    assert (parse_tail("all"), parse_tail("3"), parse_tail("0"), parse_tail("-5")) == (-1, 3, 0, -1)
    with pytest.raises(InvalidArgument, match="--tail 'x'"):
        parse_tail("x")


# -- events ------------------------------------------------------------------------------------

CID = "ab" * 32
OTHER = "cd" * 32


def _ev(action: str, cid: str = CID, type_: str = "container", **attrs: str) -> Event:
    base = {"name": "web", "image": "registry:5000/kettle-test/busybox:latest"}
    if type_ == "container":
        attrs = {**base, **attrs}
    return Event(1, type_, action, cid, attrs)


def _match(filters: list[str], ev: Event) -> bool:
    return evsvc.matches(evsvc.parse_filters(filters), ev)


def test_event_filters_match_like_dockers() -> None:
    start = _ev("start", tier="front")
    assert _match([], start)
    assert _match(["type=container", "event=start"], start)
    assert _match(["action=start"], start)
    assert _match(["event=die", "event=start"], start)  # one key: any value
    assert not _match(["event=die"], start)
    assert not _match(["type=image"], start)
    assert _match(["container=web"], start)
    assert _match(["container=abab"], start)
    assert _match([f"container={CID}"], start)
    assert not _match(["container=we"], start)  # names match whole
    assert _match(["container=other", "container=web"], start)
    assert not _match(["container=web", "event=die"], start)  # keys: all of them
    assert _match(["image=registry:5000/kettle-test/busybox"], start)
    assert _match(["image=registry:5000/kettle-test/busybox:latest"], start)
    assert not _match(["image=registry:5000/kettle-test/busybox:1.36"], start)
    assert not _match(["image=busybox"], start)
    assert _match(["label=tier"], start)
    assert _match(["label=tier=front"], start)
    assert not _match(["label=tier=back"], start)
    assert not _match(["label=other"], start)
    assert _match(["event=exec_start"], _ev("exec_start: sh -c true"))
    pull = _ev("pull", cid="docker.io/library/busybox:latest", type_="image")
    assert _match(["image=busybox"], pull)
    assert not _match(["container=web"], pull)


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("colour=red", "unknown filter 'colour'"),
        ("type", "use key=value"),
        ("event=", "use key=value"),
        ("type=network2", "unknown event type 'network2'"),
    ],
)
def test_bad_event_filters_are_refused(item: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=f"filter '{item}': {words}"):
        evsvc.parse_filters([item])


class _Ctx:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.active = True

    def add_callback(self, fn: Callable[[], None]) -> bool:
        self.callbacks.append(fn)
        return True

    def is_active(self) -> bool:
        return self.active

    def go_away(self) -> None:
        self.active = False
        for fn in self.callbacks:
            fn()


class _Daemon:
    def __init__(self) -> None:
        self.bus = EventBus()


def test_events_replay_since_and_end_at_until() -> None:
    d = _Daemon()
    part = evsvc.Part(d)  # type: ignore[arg-type]
    first = d.bus.publish("container", "create", CID, {"name": "web"})
    d.bus.publish("container", "start", OTHER, {"name": "db"})
    last = d.bus.publish("container", "die", CID, {"name": "web", "exitCode": "3"})
    req = pb.EventsRequest(
        since_ns=first.time_ns, until_ns=last.time_ns + 1, filters=["container=web"]
    )
    got = list(part.events(req, _Ctx()))
    assert [(e.action, e.id) for e in got] == [("create", CID), ("die", CID)]
    assert got[1].attributes == {"name": "web", "exitCode": "3"}
    # until alone: everything kept before it.
    req = pb.EventsRequest(until_ns=last.time_ns)
    assert [e.action for e in part.events(req, _Ctx())] == ["create", "start"]
    with pytest.raises(InvalidArgument, match="unknown filter"):
        next(part.events(pb.EventsRequest(filters=["bogus=1"]), _Ctx()))


def test_events_stream_live_and_end_when_the_client_goes() -> None:
    d = _Daemon()
    part = evsvc.Part(d)  # type: ignore[arg-type]
    ctx = _Ctx()
    got: list[pb.Event] = []
    subscribed = threading.Event()
    gen = part.events(pb.EventsRequest(filters=["event=start"]), ctx)

    def consume() -> None:
        for ev in gen:
            got.append(ev)
            subscribed.set()

    t = threading.Thread(target=consume)
    t.start()
    # The subscription exists once the generator runs: publish until the first one lands.
    deadline = time.monotonic() + 30
    while not subscribed.is_set() and time.monotonic() < deadline:
        d.bus.publish("container", "start", CID, {})
        subscribed.wait(0.05)
    d.bus.publish("container", "die", CID, {})
    d.bus.publish("container", "start", OTHER, {})
    deadline = time.monotonic() + 30
    while got[-1].id != OTHER and time.monotonic() < deadline:
        time.sleep(0.01)
    ctx.go_away()
    t.join(30)
    assert not t.is_alive()
    assert {e.action for e in got} == {"start"} and got[-1].id == OTHER
    assert d.bus._subs == []  # unsubscribed


def test_event_lines_print_like_dockers() -> None:
    ev = pb.Event(
        time_ns=1_795_600_800 * S + 7,
        type="container",
        action="start",
        id=CID,
        attributes={"name": "web", "image": "bb:latest"},
    )
    assert text_line(ev) == (
        f"2026-11-25T10:00:00.000000007Z container start {CID} (image=bb:latest, name=web)"
    )
    assert event_json(ev)["time"] == "2026-11-25T10:00:00.000000007Z"
    bare = pb.Event(time_ns=0, type="image", action="pull", id="bb:latest")
    assert text_line(bare) == "1970-01-01T00:00:00.000000000Z image pull bb:latest"
