"""kctl logs (rotation, tail, since/until, timestamps, follow) and kctl events, end to end."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import BIN, Image, Kettled

pytestmark = pytest.mark.privileged

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
#: the log bounds of the small-logs kettled (kettled.toml [logs]).
SMALL_SIZE, SMALL_FILES = 1024, 2


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", image.ref)
    return image.ref


@pytest.fixture(scope="module")
def small(daemon_tmp: Path, image: Image) -> Iterator[Kettled]:
    """A kettled of its own whose default log rotation is tiny (1k, 2 files), with the image."""
    k = Kettled(daemon_tmp / f"kettled-small-logs-{uuid.uuid4().hex[:6]}", image.registry)
    with k.config.open("a") as f:
        f.write(f'[logs]\nmax_size = "1k"\nmax_file = {SMALL_FILES}\n')
    try:
        k.start()
        k.ok("pull", image.ref)
        yield k
    finally:
        leaks = k.cleanup()
        if leaks:
            pytest.fail(f"left behind: {leaks}\n{k.log.read_text()[-3000:]}")


def _error(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode != 0, res.stdout
    assert res.stderr.startswith("kctl: ") and res.stderr.count("\n") == 1, res.stderr
    for w in words:
        assert w in res.stderr, res.stderr


def _log_files(k: Kettled, cid: str) -> list[Path]:
    return sorted((k.root / "containers" / cid).glob("*-json.log*"))


def _numbers(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.splitlines()]


# -- logs --------------------------------------------------------------------------------------


def test_logs_rotate_within_bounds_and_keep_the_newest(small: Kettled, image: Image) -> None:
    script = 'i=1; while [ $i -le 300 ]; do echo "line $i"; i=$((i+1)); done'
    cid = small.ok("run", "-d", image.ref, "sh", "-c", script).strip()
    try:
        assert small.ok("wait", cid).strip() == "0"
        files = _log_files(small, cid)
        assert [f.name for f in files] == [f"{cid}-json.log", f"{cid}-json.log.1"]
        assert all(f.stat().st_size <= SMALL_SIZE for f in files)
        numbers = _numbers(small.ok("logs", cid))
        # The newest lines, in order, none missing up to the last.
        assert numbers == list(range(numbers[0], 301)) and numbers[0] > 1
        assert _numbers(small.ok("logs", "--tail", "3", cid)) == [298, 299, 300]
    finally:
        small.ok("rm", "-f", cid)
    assert not (small.root / "containers" / cid).exists()
    _error(small.kctl("logs", cid), "no such container")


def test_logs_follow_across_rotation_loses_and_repeats_nothing(
    small: Kettled, image: Image
) -> None:
    # Paced so that the follower is never two files behind (a file holds about 10 lines).
    script = 'i=1; while [ $i -le 120 ]; do echo "line $i"; i=$((i+1)); sleep 0.05; done'
    cid = small.ok("run", "-d", image.ref, "sh", "-c", script).strip()
    try:
        res = small.kctl("logs", "-f", cid)
        assert res.returncode == 0, res.stderr
        assert _numbers(res.stdout) == list(range(1, 121))
        assert len(_log_files(small, cid)) == SMALL_FILES
    finally:
        small.ok("rm", "-f", cid)


def test_run_log_opt_rotates_and_bad_options_are_refused(kettled: Kettled, ref: str) -> None:
    if "--log-opt" not in kettled.ok("run", "--help"):
        pytest.skip("kctl run has no --log-opt yet (kettle.cli.runflags)")
    _error(kettled.kctl("create", "--log-opt", "colour=red", ref, "true"), "log-opt", "colour")
    _error(kettled.kctl("create", "--log-opt", "max-size=big", ref, "true"), "max-size")
    script = 'i=1; while [ $i -le 100 ]; do echo "line $i"; i=$((i+1)); done'
    cid = kettled.ok(
        "run", "-d", "--log-opt", "max-size=1k", "--log-opt", "max-file=3", ref, "sh", "-c", script
    ).strip()
    try:
        assert kettled.ok("wait", cid).strip() == "0"
        files = _log_files(kettled, cid)
        assert len(files) == 3 and all(f.stat().st_size <= 1024 for f in files)
        numbers = _numbers(kettled.ok("logs", cid))
        assert numbers == list(range(numbers[0], 101)) and numbers[0] > 1
    finally:
        kettled.ok("rm", "-f", cid)


def test_logs_timestamps_since_until_and_tail(kettled: Kettled, ref: str) -> None:
    name = _name()
    # The pause puts "oops" well before l1 in the log: the two streams' copiers race, and
    # --tail with --until below counts entries of both streams.
    script = "echo oops >&2; sleep 0.3; for i in 1 2 3 4 5; do echo l$i; done"
    kettled.ok("run", "-d", "--name", name, ref, "sh", "-c", script)
    try:
        kettled.ok("wait", name)
        res = kettled.kctl("logs", "-t", name)
        assert res.returncode == 0 and res.stderr.split()[1:] == ["oops"], res.stderr
        assert STAMP.match(res.stderr.split()[0]), res.stderr
        stamped = [line.split(" ", 1) for line in res.stdout.splitlines()]
        assert [text for _t, text in stamped] == ["l1", "l2", "l3", "l4", "l5"]
        times = [t for t, _text in stamped]
        assert all(STAMP.match(t) for t in times) and times == sorted(set(times)), times

        def lines(*flags: str) -> list[str]:
            return kettled.ok("logs", *flags, name).split()

        assert lines() == ["l1", "l2", "l3", "l4", "l5"]
        assert lines("--since", times[2]) == ["l3", "l4", "l5"]
        assert lines("--until", times[2]) == ["l1", "l2"]
        assert lines("--since", times[1], "--until", times[3]) == ["l2", "l3"]
        # The same instant as unix seconds with nanoseconds.
        assert lines("--since", _unix(times[3])) == ["l4", "l5"]
        assert lines("--since", "1h") == ["l1", "l2", "l3", "l4", "l5"]
        assert lines("--until", "1h") == []
        assert lines("--since", "2000-01-01T00:00:00Z") == ["l1", "l2", "l3", "l4", "l5"]
        # --tail counts both streams; which of "oops" and the l's was copied last is a race
        # between the two copiers, so check the count and that stdout's part is its tail.
        res = kettled.kctl("logs", "--tail", "2", name)
        tail_out, tail_err = res.stdout.split(), res.stderr.split()
        assert len(tail_out) + len(tail_err) == 2, res
        assert tail_out == ["l1", "l2", "l3", "l4", "l5"][5 - len(tail_out) :], res
        assert lines("-n", "0") == []
        assert lines("--tail", "all") == ["l1", "l2", "l3", "l4", "l5"]
        assert lines("--tail", "2", "--until", times[3]) == ["l2", "l3"]
        _error(kettled.kctl("logs", "--since", "yesterday", name), "--since", "yesterday")
        _error(kettled.kctl("logs", "--tail", "some", name), "--tail")
    finally:
        kettled.ok("rm", "-f", name)


def _unix(stamp: str) -> str:
    """An RFC3339 UTC stamp with nine fraction digits as unix seconds.nanoseconds."""
    import calendar

    whole, frac = stamp.rstrip("Z").split(".")
    return f"{calendar.timegm(time.strptime(whole, '%Y-%m-%dT%H:%M:%S'))}.{frac}"


# -- events ------------------------------------------------------------------------------------


class _Events:
    """A `kctl events` left running; its lines read from a thread, with a deadline."""

    def __init__(self, k: Kettled, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "kctl"), "--address", k.address, "events", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, action: str, timeout: float = 60) -> list[dict[str, object]]:
        """JSON events up to and including the first `action`."""
        got: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "kctl events ended early"
            ev = json.loads(line)
            got.append(ev)
            if ev["action"] == action:
                return got

    def close(self) -> str:
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=30)
        return err


def test_events_follow_a_container_through_its_life(kettled: Kettled, ref: str) -> None:
    name = _name()
    since = f"{time.time() - 1:.9f}"
    # --since: what happens before the stream is subscribed is replayed, not missed.
    events = _Events(kettled, "--since", since, "--filter", f"container={name}", "--format", "json")
    try:
        kettled.ok(
            "run", "-d", "--rm", "--name", name, "-l", "team=kettle", ref, "sh", "-c", "exit 3"
        )
        got = events.until("destroy")
    finally:
        events.close()
    assert [e["action"] for e in got] == ["create", "start", "die", "destroy"]
    cid = got[0]["id"]
    assert isinstance(cid, str) and len(cid) == 64
    for e in got:
        assert e["type"] == "container" and e["id"] == cid
        attrs = e["attributes"]
        assert isinstance(attrs, dict)
        assert (attrs["name"], attrs["image"], attrs["team"]) == (name, ref, "kettle")
        assert STAMP.match(str(e["time"]))
    die = got[2]["attributes"]
    assert isinstance(die, dict) and die["exitCode"] == "3"
    times = [int(str(e["time_ns"])) for e in got]
    assert times == sorted(times)


def test_events_replay_with_filters_and_text_lines(kettled: Kettled, ref: str) -> None:
    one, two = _name(), _name()
    start = time.time() - 1
    kettled.ok("run", "--rm", "--name", one, "-l", "tier=front", ref, "true")
    kettled.ok("run", "--rm", "--name", two, "-l", "tier=back", ref, "true")
    window = ("--since", f"{start:.9f}", "--until", "0s")

    def replay(*filters: str) -> list[tuple[str, str]]:
        args = [a for f in filters for a in ("--filter", f)]
        out = kettled.ok("events", *window, "--format", "json", *args)
        found = [json.loads(line) for line in out.splitlines()]
        return [(e["attributes"]["name"], e["action"]) for e in found if e["type"] == "container"]

    mine = {one, two}
    assert [a for n, a in replay(f"container={one}")] == ["create", "start", "die", "destroy"]
    starts = [x for x in replay("event=start", "type=container") if x[0] in mine]
    assert starts == [(one, "start"), (two, "start")]
    either = {n for n, _a in replay(f"container={one}", f"container={two}")}
    assert either == mine
    assert {n for n, _a in replay("label=tier=back")} == {two}
    assert {n for n, _a in replay("label=tier") if n in mine} == mine
    assert replay(f"container={one}", "label=tier=back") == []
    assert {n for n, _a in replay(f"image={ref}") if n in mine} == mine
    assert replay("image=registry.invalid/nothing:here") == []
    text = kettled.ok("events", *window, "--filter", f"container={one}", "--filter", "event=die")
    (line,) = text.splitlines()
    stamp, type_, action, cid, attrs = line.split(" ", 4)
    assert STAMP.match(stamp) and (type_, action, len(cid)) == ("container", "die", 64)
    assert attrs.startswith("(") and f"name={one}" in attrs and "exitCode=0" in attrs


def test_bad_event_requests_are_refused_clearly(kettled: Kettled) -> None:
    _error(kettled.kctl("events", "--filter", "colour=red"), "unknown filter 'colour'")
    _error(kettled.kctl("events", "--filter", "type=spaceship"), "unknown event type")
    _error(kettled.kctl("events", "--filter", "event"), "key=value")
    _error(kettled.kctl("events", "--since", "soon"), "--since", "soon")


def test_events_until_ahead_waits_for_it_then_ends(kettled: Kettled, ref: str) -> None:
    name = _name()
    since = f"{time.time() - 1:.9f}"
    kettled.ok("run", "--rm", "--name", name, ref, "true")
    until = f"{time.time() + 2:.9f}"
    res = kettled.kctl(
        "events", "--since", since, "--until", until, "--filter", f"container={name}"
    )
    assert res.returncode == 0, res.stderr
    assert time.time() >= float(until)
    actions = [line.split()[2] for line in res.stdout.splitlines()]
    assert actions == ["create", "start", "die", "destroy"]
