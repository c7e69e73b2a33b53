"""kctl stats and kctl top: the readers on a fake /proc and cgroupfs, then end to end against
a real kettled."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kettle.cgroups import stats as cgstats
from kettle.cli.commands.stats import binary_size, figures, row
from kettle.daemon import stats
from kettle.errors import FailedPrecondition
from tests.daemon.conftest import Image, Kettled, wait_for

GiB = 1 << 30

# -- readers, on fake files ------------------------------------------------------------------------


def _write(base: Path, files: dict[str, str]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)
    return base


def test_summarize_v2(tmp_path: Path) -> None:
    d = _write(
        tmp_path / "cg",
        {
            "cgroup.controllers": "cpu memory pids io",
            "cpu.stat": "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
            "memory.current": str(10 << 20),
            "memory.max": "max",
            "memory.stat": "anon 1024\nfile 4096\ninactive_file 3145728\n",
            "pids.current": "3",
            "pids.max": "max",
            "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=5 wbytes=7\n",
        },
    )
    got = stats.summarize(cgstats.v2(str(d)), host_mem=8 * GiB)
    assert got == {
        "cpu_usage_ns": 2_500_000,
        "memory_usage": (10 << 20) - 3145728,  # without inactive file pages, as Docker
        "memory_limit": 8 * GiB,  # unlimited: the host's memory
        "pids": 3,
        "block_read": 105,
        "block_write": 207,
    }


def test_summarize_v2_with_a_limit(tmp_path: Path) -> None:
    d = _write(
        tmp_path / "cg",
        {"memory.current": "4096", "memory.max": str(64 << 20), "memory.stat": ""},
    )
    got = stats.summarize(cgstats.v2(str(d)), host_mem=8 * GiB)
    assert (got["memory_usage"], got["memory_limit"]) == (4096, 64 << 20)


def test_summarize_v1(tmp_path: Path) -> None:
    acct = _write(
        tmp_path / "cpuacct",
        {"cpuacct.usage": "987654321", "cpuacct.usage_percpu": "1 2", "cpuacct.stat": ""},
    )
    mem = _write(
        tmp_path / "memory",
        {
            "memory.usage_in_bytes": str(20 << 20),
            "memory.limit_in_bytes": "9223372036854771712",
            "memory.stat": "cache 100\ntotal_inactive_file 1048576\ninactive_file 7\n",
        },
    )
    pids = _write(tmp_path / "pids", {"pids.current": "2", "pids.max": "max"})
    blk = _write(
        tmp_path / "blkio",
        {
            "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n"
            "8:0 Sync 0\n8:0 Async 12288\n8:0 Total 12288\nTotal 12288\n",
            "blkio.throttle.io_serviced_recursive": "",
        },
    )
    paths = {"cpuacct": str(acct), "memory": str(mem), "pids": str(pids), "blkio": str(blk)}
    got = stats.summarize(cgstats.v1(paths, None), host_mem=4 * GiB)
    assert got == {
        "cpu_usage_ns": 987654321,
        "memory_usage": (20 << 20) - 1048576,
        "memory_limit": 4 * GiB,
        "pids": 2,
        "block_read": 4096,
        "block_write": 8192,
    }


def test_summarize_without_controllers() -> None:
    got = stats.summarize({"cpu": {}, "memory": {}, "pids": {}, "blkio": {}}, host_mem=GiB)
    assert got == {
        "cpu_usage_ns": 0,
        "memory_usage": 0,
        "memory_limit": GiB,
        "pids": 0,
        "block_read": 0,
        "block_write": 0,
    }


NET_DEV = (
    "Inter-|   Receive                            |  Transmit\n"
    " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...\n"
    "    lo: 999999 10 0 0 0 0 0 0 999999 10 0 0 0 0 0 0\n"
    "  eth0:   1500 12 0 0 0 0 0 0    700  6 0 0 0 0 0 0\n"
    " veth1:     10  1 0 0 0 0 0 0     20  1 0 0 0 0 0 0\n"
)


def test_parse_net_dev_skips_lo() -> None:
    assert stats.parse_net_dev(NET_DEV) == (1510, 720)
    assert stats.parse_net_dev("") == (0, 0)


def _fake_proc(tmp_path: Path, pid: int, netns: Path) -> Path:
    proc = tmp_path / "proc"
    _write(
        proc,
        {
            "stat": "cpu  100 5 50 1000 10 1 2 7 0 0\ncpu0 1 1 1 1 1 1 1\nbtime 1700000000\n",
            "meminfo": "MemTotal:        2048 kB\nMemFree: 1 kB\n",
            "uptime": "5000.25 9000.00\n",
        },
    )
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "self" / "ns" / "net").write_text("host netns")
    (proc / str(pid) / "ns").mkdir(parents=True)
    (proc / str(pid) / "net").mkdir()
    (proc / str(pid) / "net" / "dev").write_text(NET_DEV)
    os.symlink(netns, proc / str(pid) / "ns" / "net")
    return proc


def test_host_readers(tmp_path: Path) -> None:
    netns = tmp_path / "netns"
    netns.write_text("")
    proc = _fake_proc(tmp_path, 42, netns)
    tck = os.sysconf("SC_CLK_TCK")
    assert stats.system_cpu_ns(str(proc)) == (100 + 5 + 50 + 1000 + 10 + 1 + 2) * 10**9 // tck
    assert stats.host_memory(str(proc)) == 2048 * 1024
    assert stats.boot_time_s(str(proc)) == 1700000000
    assert stats.uptime_s(str(proc)) == 5000.25
    assert stats.net_io(42, str(proc)) == (1510, 720)
    assert stats.net_io(43, str(proc)) == (0, 0)  # gone


def test_net_io_of_the_hosts_namespace_is_not_the_containers(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, 42, tmp_path / "proc" / "self" / "ns" / "net")
    assert stats.net_io(42, str(proc)) == (0, 0)


class FakeManager:
    def __init__(self, raw: dict[str, Any], pids: list[int], exists: bool = True) -> None:
        self.raw, self._pids, self._exists = raw, pids, exists

    def exists(self) -> bool:
        return self._exists

    def stats(self) -> dict[str, Any]:
        return self.raw

    def pids(self) -> list[int]:
        return self._pids


def test_sample(tmp_path: Path) -> None:
    netns = tmp_path / "netns"
    netns.write_text("")
    proc = _fake_proc(tmp_path, 42, netns)
    raw = {"cpu": {"usage": {"total": 77}}, "memory": {"usage": {"usage": 1000}}, "pids": {}}
    s = stats.sample(FakeManager(raw, [42, 43]), 42, now_ns=123, proc=str(proc))  # type: ignore[arg-type]
    assert s == stats.Sample(
        read_ns=123,
        cpu_usage_ns=77,
        system_ns=stats.system_cpu_ns(str(proc)),
        online_cpus=os.sysconf("SC_NPROCESSORS_ONLN"),
        memory_usage=1000,
        memory_limit=2048 * 1024,
        pids=2,  # no pids controller: the cgroup's members
        net_rx=1510,
        net_tx=720,
    )
    with pytest.raises(FailedPrecondition, match="cgroup is gone"):
        stats.sample(FakeManager(raw, [], exists=False), 42, proc=str(proc))  # type: ignore[arg-type]


def test_cgroups_path_from_the_spec() -> None:
    spec = json.dumps({"linux": {"cgroupsPath": "/kettle/abc"}})
    assert stats.cgroups_path(spec, "abc") == "/kettle/abc"
    with pytest.raises(FailedPrecondition, match=r"container abc: spec has no linux\.cgroupsPath"):
        stats.cgroups_path("{}", "abc")


@pytest.mark.parametrize(
    ("prev", "cur", "cpus", "pct"),
    [
        ((0, 0), (1_000, 10_000), 2, 20.0),  # 10% of the host's time on a 2-CPU host
        ((500, 1_000), (500, 2_000), 4, 0.0),  # idle
        ((500, 1_000), (900, 1_000), 4, 0.0),  # no host time passed
        ((900, 1_000), (500, 2_000), 4, 0.0),  # a counter went back (a restart)
    ],
)
def test_cpu_percent_like_docker(
    prev: tuple[int, int], cur: tuple[int, int], cpus: int, pct: float
) -> None:
    assert stats.cpu_percent(*prev, *cur, cpus) == pytest.approx(pct)


def test_memory_percent() -> None:
    assert stats.memory_percent(256, 1024) == 25.0
    assert stats.memory_percent(1, 0) == 0.0


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0B"), (1000, "1000B"), (1536, "1.5KiB"), (1597152, "1.523MiB"), (8 * GiB, "8GiB")],
)
def test_binary_size(n: int, text: str) -> None:
    assert binary_size(n) == text


def test_kctl_figures_and_row() -> None:
    from kettle.api import kettle_pb as pb

    prev = pb.ContainerStats(id="a" * 64, name="web", read_ns=1, cpu_usage_ns=0, system_ns=0)
    cur = pb.ContainerStats(
        id="a" * 64,
        name="web",
        read_ns=2,
        cpu_usage_ns=500,
        system_ns=10_000,
        online_cpus=2,
        memory_usage=512 << 20,
        memory_limit=2 * GiB,
        pids=3,
        net_rx=1500,
        net_tx=20,
        block_read=4096,
        block_write=0,
    )
    f = figures(cur, prev)
    assert (f["cpu_percent"], f["memory_percent"], f["running"]) == (10.0, 25.0, True)
    assert row(f) == [
        "a" * 12,
        "web",
        "10.00%",
        "512MiB / 2GiB",
        "25.00%",
        "1.5kB / 20B",
        "4.1kB / 0B",
        "3",
    ]
    stopped = figures(pb.ContainerStats(id="b" * 64, name="gone"), None)
    assert row(stopped) == ["b" * 12, "gone", "--", "-- / --", "--", "--", "--", "--"]


# -- top's rows ------------------------------------------------------------------------------------


def test_parse_stat_with_a_hostile_comm() -> None:
    fields = " ".join(str(i) for i in range(40))
    pid, comm, rest = stats.parse_stat(f"1234 (a) (b c)) {fields}")
    assert (pid, comm, rest[:2]) == (1234, "a) (b c)", ["0", "1"])


@pytest.mark.parametrize(
    ("tty_nr", "name"),
    [(0, "?"), ((136 << 8) | 3, "pts/3"), ((137 << 8) | 1, "pts/257"), ((4 << 8) | 1, "tty1")],
)
def test_tty_name(tty_nr: int, name: str) -> None:
    assert stats.tty_name(tty_nr) == name


@pytest.mark.parametrize(
    ("secs", "text"), [(0, "00:00:00"), (61, "00:01:01"), (3723, "01:02:03"), (90061, "1-01:01:01")]
)
def test_cpu_time(secs: int, text: str) -> None:
    assert stats.cpu_time(secs) == text


def test_start_time() -> None:
    now = time.time()
    assert stats.start_time(now, now) == time.strftime("%H:%M", time.localtime(now))
    assert stats.start_time(now - 3 * 365 * 86400, now) == time.strftime(
        "%Y", time.localtime(now - 3 * 365 * 86400)
    )


def test_top_row() -> None:
    tck = 100
    p = stats.ProcStat(
        pid=50,
        ppid=1,
        comm="sleep",
        tty_nr=0,
        utime=150,
        stime=50,  # 2 s of CPU
        starttime=1000 * tck,
        euid=0,
        cmdline=("sleep", "1000"),
    )
    now = 1_700_000_000 + 1010.0
    cells = stats.top_row(
        p, clk_tck=tck, boot_s=1_700_000_000, uptime=1010.0, now_s=now, names=lambda u: "root"
    )
    # alive 10 s, 2 s of CPU: C 20
    assert cells[:4] == ["root", "50", "1", "20"]
    assert cells[5:] == ["?", "00:00:02", "sleep 1000"]
    kthread = stats.ProcStat(50, 2, "kworker/0", 0, 0, 0, 0, 0, ())
    assert stats.top_row(kthread, clk_tck=tck, boot_s=0, uptime=0.5, now_s=now, names=str)[3:] == [
        "0",
        stats.start_time(0, now),
        "?",
        "00:00:00",
        "[kworker/0]",
    ]


def test_top_of_this_process() -> None:
    rows = stats.top([os.getpid(), 999_999_999])  # the second is no process
    assert len(rows) == 1
    uid, pid, ppid = rows[0][:3]
    assert (pid, ppid) == (str(os.getpid()), str(os.getppid()))
    assert uid == stats.user_name(os.geteuid())
    assert "pytest" in rows[0][-1] or "python" in rows[0][-1]


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", image.ref)
    return image.ref


@pytest.fixture
def names(kettled: Kettled) -> Iterator[list[str]]:
    """Containers a test makes, removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        kettled.kctl("rm", "-f", name)


def _run(k: Kettled, names: list[str], ref: str, *cmd: str) -> str:
    name = f"st-{uuid.uuid4().hex[:10]}"
    names.append(name)
    k.ok("run", "-d", "--name", name, ref, *cmd)
    return name


def _stats(k: Kettled, *args: str) -> list[dict[str, Any]]:
    found = json.loads(k.ok("stats", "--no-stream", "--format", "json", *args))
    assert isinstance(found, list)
    return found


def _pid(k: Kettled, name: str) -> int:
    (item,) = json.loads(k.ok("inspect", name))
    return int(item["pid"])


@pytest.mark.privileged
def test_stats_of_a_running_container(kettled: Kettled, ref: str, names: list[str]) -> None:
    name = _run(kettled, names, ref, "sh", "-c", "sleep 1000 & sleep 1000 & wait")
    wait_for(lambda: len(kettled.ok("top", name).splitlines()) == 4, "three processes")
    (s,) = _stats(kettled, name)
    assert s["name"] == name and s["running"] is True
    assert s["pids"] == 3
    assert s["memory_usage"] > 0
    assert s["memory_limit"] >= s["memory_usage"]
    assert s["memory_limit"] <= stats.host_memory()
    assert s["cpu_usage_ns"] > 0 and s["system_ns"] > 0
    assert s["online_cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert s["cpu_percent"] >= 0
    assert s["memory_percent"] == round(100 * s["memory_usage"] / s["memory_limit"], 2)
    # --network none: only lo, which is not counted
    assert (s["net_rx"], s["net_tx"]) == (0, 0)
    for key in ("block_read", "block_write", "read_ns"):
        assert isinstance(s[key], int)


@pytest.mark.privileged
def test_stats_shows_a_busy_container_using_cpu(
    kettled: Kettled, ref: str, names: list[str]
) -> None:
    name = _run(kettled, names, ref, "sh", "-c", "while :; do :; done")
    (s,) = _stats(kettled, name)
    assert s["cpu_percent"] > 0


@pytest.mark.privileged
def test_stats_no_stream_table_lists_running_containers(
    kettled: Kettled, ref: str, names: list[str]
) -> None:
    name = _run(kettled, names, ref, "sleep", "1000")
    res = kettled.kctl("stats", "--no-stream", timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == [
        "CONTAINER",
        "ID",
        "NAME",
        "CPU",
        "%",
        "MEM",
        "USAGE",
        "/",
        "LIMIT",
        "MEM",
        "%",
        "NET",
        "I/O",
        "BLOCK",
        "I/O",
        "PIDS",
    ]
    (mine,) = [ln for ln in lines[1:] if f" {name} " in ln]
    assert mine.split()[-1] == "1"
    assert "\033" not in res.stdout  # no redraw codes when not streaming to a terminal


@pytest.mark.privileged
def test_stats_all_shows_a_stopped_container_without_figures(
    kettled: Kettled, ref: str, names: list[str]
) -> None:
    name = f"st-{uuid.uuid4().hex[:10]}"
    names.append(name)
    kettled.ok("run", "--name", name, ref, "true")
    (s,) = [s for s in _stats(kettled, "-a") if s["name"] == name]
    assert (s["running"], s["pids"], s["memory_usage"]) == (False, 0, 0)
    assert name not in [s["name"] for s in _stats(kettled)]


@pytest.mark.privileged
def test_stats_stream_sends_a_reading_each_second(
    kettled: Kettled, ref: str, names: list[str]
) -> None:
    import subprocess

    from tests.daemon.conftest import BIN

    name = _run(kettled, names, ref, "sleep", "1000")
    cmd = [str(BIN / "kctl"), "--address", kettled.address, "stats", "--format", "json", name]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            readings = [json.loads(proc.stdout.readline()) for _ in range(3)]
        finally:
            proc.kill()
    assert [r[0]["name"] for r in readings] == [name] * 3
    stamps = [r[0]["read_ns"] for r in readings]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


@pytest.mark.privileged
def test_stats_of_an_unknown_container(kettled: Kettled) -> None:
    res = kettled.kctl("stats", "--no-stream", "no-such-ctr-" + uuid.uuid4().hex[:6])
    assert res.returncode != 0
    assert res.stderr.startswith("kctl: ") and "no such container" in res.stderr


@pytest.mark.privileged
def test_top_lists_the_containers_processes(kettled: Kettled, ref: str, names: list[str]) -> None:
    name = _run(kettled, names, ref, "sleep", "1000")
    lines = kettled.ok("top", name).splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert len(lines) == 2
    cells = lines[1].split()
    assert cells[0] == "root"
    assert int(cells[1]) == _pid(kettled, name)  # host pids, as docker top shows
    assert cells[-2:] == ["sleep", "1000"]


@pytest.mark.privileged
def test_top_of_a_stopped_container_fails_clearly(
    kettled: Kettled, ref: str, names: list[str]
) -> None:
    name = f"st-{uuid.uuid4().hex[:10]}"
    names.append(name)
    kettled.ok("run", "--name", name, ref, "true")
    res = kettled.kctl("top", name)
    assert res.returncode != 0
    assert res.stderr.startswith("kctl: ") and res.stderr.count("\n") == 1
    assert "is not running" in res.stderr


@pytest.mark.privileged
def test_stats_shows_the_memory_limit(kettled: Kettled, ref: str, names: list[str]) -> None:
    name = f"st-{uuid.uuid4().hex[:10]}"
    res = kettled.kctl("run", "-d", "--memory", "64m", "--name", name, ref, "sleep", "1000")
    if res.returncode != 0 and "unrecognized arguments" in res.stderr:
        pytest.skip("kctl run has no --memory yet")
    names.append(name)
    assert res.returncode == 0, res.stderr
    (s,) = _stats(kettled, name)
    assert s["memory_limit"] == 64 << 20
    assert 0 < s["memory_usage"] < s["memory_limit"]
    table = kettled.ok("stats", "--no-stream", name)
    assert " / 64MiB " in table
