"""A running container's resource use, read from its cgroup and /proc, and `top`'s table.

The cgroup is found from the container's linux.cgroupsPath (kettled sets /<namespace>/<id>),
through kettle.cgroups, which detects v1, hybrid or v2 at run time and reads the files as
``runc events --stats`` does; this module turns that into Docker's numbers:

- memory use is usage minus inactive file pages (Docker's "usage without cache"), and the
  limit is the host's memory when the cgroup has none;
- CPU % is Docker's: the container's CPU time over the host's between two samples, times the
  online CPUs, times 100 (the client computes it from two samples; see :func:`cpu_percent`);
- network counters come from /proc/<pid>/net/dev, which shows the container's network
  namespace; a container sharing kettled's namespace (--network host) reports none, since
  those counters are the host's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kettle.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from kettle.cgroups.host import Host
    from kettle.cgroups.manager import Manager

_NS = 1_000_000_000
#: what a v1 memory cgroup without a limit reports (PAGE_COUNTER_MAX pages).
_V1_UNLIMITED = 0x7FFFFFFFFFFFF000


@dataclass(frozen=True)
class Sample:
    """One reading: the fields of kettle.v1 ContainerStats."""

    read_ns: int = 0
    cpu_usage_ns: int = 0
    system_ns: int = 0
    online_cpus: int = 0
    memory_usage: int = 0
    memory_limit: int = 0
    pids: int = 0
    net_rx: int = 0
    net_tx: int = 0
    block_read: int = 0
    block_write: int = 0


# -- the host ----------------------------------------------------------------------------------


def system_cpu_ns(proc: str = "/proc") -> int:
    """The host's CPU time in ns as Docker counts it: user through softirq of /proc/stat's
    "cpu" line (steal and guest left out)."""
    with open(os.path.join(proc, "stat")) as f:
        for line in f:
            if line.startswith("cpu "):
                ticks = sum(int(x) for x in line.split()[1:8])
                return ticks * _NS // os.sysconf("SC_CLK_TCK")
    raise FailedPrecondition(f"{proc}/stat: no cpu line")


def host_memory(proc: str = "/proc") -> int:
    """MemTotal, in bytes."""
    with open(os.path.join(proc, "meminfo")) as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise FailedPrecondition(f"{proc}/meminfo: no MemTotal line")


def online_cpus() -> int:
    return int(os.sysconf("SC_NPROCESSORS_ONLN"))


def boot_time_s(proc: str = "/proc") -> int:
    with open(os.path.join(proc, "stat")) as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise FailedPrecondition(f"{proc}/stat: no btime line")


def uptime_s(proc: str = "/proc") -> float:
    with open(os.path.join(proc, "uptime")) as f:
        return float(f.read().split()[0])


# -- network -----------------------------------------------------------------------------------


def parse_net_dev(text: str) -> tuple[int, int]:
    """(received, sent) bytes over every interface but lo, from /proc/<pid>/net/dev."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, colon, rest = line.partition(":")
        fields = rest.split()
        if not colon or name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def net_io(pid: int, proc: str = "/proc") -> tuple[int, int]:
    """The counters of pid's network namespace; (0, 0) when it is kettled's own."""
    try:
        theirs = os.stat(os.path.join(proc, str(pid), "ns", "net")).st_ino
        ours = os.stat(os.path.join(proc, "self", "ns", "net")).st_ino
    except FileNotFoundError:
        return 0, 0  # the process is gone: it has no network left to count
    if theirs == ours:
        return 0, 0
    try:
        with open(os.path.join(proc, str(pid), "net", "dev")) as f:
            return parse_net_dev(f.read())
    except FileNotFoundError:
        return 0, 0


# -- the cgroup --------------------------------------------------------------------------------


def cgroups_path(spec_json: str, cid: str) -> str:
    """linux.cgroupsPath of a container's OCI spec (Record.spec)."""
    import json

    try:
        path = json.loads(spec_json).get("linux", {}).get("cgroupsPath", "")
    except (ValueError, AttributeError):
        raise InvalidArgument(f"container {cid}: its spec is not a JSON object") from None
    if not isinstance(path, str) or not path:
        raise FailedPrecondition(f"container {cid}: spec has no linux.cgroupsPath")
    return path


def manager(path: str, cid: str, host: Host | None = None) -> Manager:
    """The container's cgroup manager (reading only; nothing is created)."""
    from kettle import cgroups

    return cgroups.new_manager(path, cid, host=host)


def _blkio(raw: dict[str, Any]) -> tuple[int, int]:
    """Read and write bytes summed over devices, as Docker sums ioServiceBytesRecursive."""
    read = write = 0
    for entry in raw.get("blkio", {}).get("ioServiceBytesRecursive", []):
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += int(entry.get("value", 0))
        elif op == "write":
            write += int(entry.get("value", 0))
    return read, write


def summarize(raw: dict[str, Any], host_mem: int) -> dict[str, int]:
    """Docker's figures from the runc-style stats a cgroup manager returns."""
    mem = raw.get("memory", {})
    usage_entry = mem.get("usage", {})
    usage = int(usage_entry.get("usage", 0))
    stat = mem.get("raw", {})
    # v1 names it total_inactive_file (hierarchical), v2 inactive_file.
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    if 0 < inactive < usage:
        usage -= inactive
    limit = int(usage_entry.get("limit", 0))
    if limit <= 0 or limit >= _V1_UNLIMITED or limit > host_mem:
        limit = host_mem
    read, write = _blkio(raw)
    return {
        "cpu_usage_ns": int(raw.get("cpu", {}).get("usage", {}).get("total", 0)),
        "memory_usage": usage,
        "memory_limit": limit,
        "pids": int(raw.get("pids", {}).get("current", 0)),
        "block_read": read,
        "block_write": write,
    }


def sample(
    mgr: Manager,
    pid: int,
    *,
    now_ns: int | None = None,
    proc: str = "/proc",
) -> Sample:
    """Read a running container: mgr its cgroup, pid its init (for the network namespace)."""
    if not mgr.exists():
        raise FailedPrecondition("the container's cgroup is gone (did it exit?)")
    numbers = summarize(mgr.stats(), host_memory(proc))
    if not numbers["pids"]:
        # No pids controller on this host (or it reports nothing): count the members.
        numbers["pids"] = len(mgr.pids())
    rx, tx = net_io(pid, proc) if pid > 0 else (0, 0)
    return Sample(
        read_ns=time.time_ns() if now_ns is None else now_ns,
        system_ns=system_cpu_ns(proc),
        online_cpus=online_cpus(),
        net_rx=rx,
        net_tx=tx,
        **numbers,
    )


# -- percentages (the client's side) -----------------------------------------------------------


def cpu_percent(
    prev_cpu_ns: int, prev_system_ns: int, cpu_ns: int, system_ns: int, cpus: int
) -> float:
    """Docker's CPU %: container time over host time between two samples, times the CPUs."""
    cpu_delta = cpu_ns - prev_cpu_ns
    system_delta = system_ns - prev_system_ns
    if cpu_delta <= 0 or system_delta <= 0 or cpus <= 0:
        return 0.0
    return cpu_delta / system_delta * cpus * 100.0


def memory_percent(usage: int, limit: int) -> float:
    return usage / limit * 100.0 if limit > 0 else 0.0


# -- top ---------------------------------------------------------------------------------------

TOP_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


@dataclass(frozen=True)
class ProcStat:
    """What `ps -ef` shows of one process, from /proc/<pid>/{stat,status,cmdline}."""

    pid: int
    ppid: int
    comm: str
    tty_nr: int
    utime: int
    stime: int
    starttime: int
    euid: int
    cmdline: tuple[str, ...]


def parse_stat(text: str) -> tuple[int, str, list[str]]:
    """(pid, comm, the fields after comm) of a /proc/<pid>/stat line; comm may hold spaces
    and parentheses, so it ends at the last ")"."""
    head, _, tail = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    fields = tail.split()
    if not pid_text.strip().isdigit() or len(fields) < 20:
        raise InvalidArgument(f"/proc stat line {text[:60]!r}: unexpected format")
    return int(pid_text), comm, fields


def read_proc(pid: int, proc: str = "/proc") -> ProcStat | None:
    """None when the process is gone (it may exit while we read)."""
    base = os.path.join(proc, str(pid))
    try:
        with open(os.path.join(base, "stat")) as f:
            stat = f.read()
        with open(os.path.join(base, "status")) as f:
            status = f.read()
        with open(os.path.join(base, "cmdline"), "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    got, comm, fields = parse_stat(stat)
    euid = 0
    for line in status.splitlines():
        if line.startswith("Uid:"):
            euid = int(line.split()[2])
            break
    args = tuple(a.decode("utf-8", "replace") for a in cmdline.split(b"\0"))
    while args and args[-1] == "":
        args = args[:-1]
    return ProcStat(
        pid=got,
        ppid=int(fields[1]),
        comm=comm,
        tty_nr=int(fields[4]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        starttime=int(fields[19]),
        euid=euid,
        cmdline=args,
    )


def tty_name(tty_nr: int) -> str:
    """ps's TTY column from a stat tty_nr ("?" for none)."""
    if tty_nr == 0:
        return "?"
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    return "?"


def cpu_time(seconds: int) -> str:
    """ps's TIME: [DD-]HH:MM:SS."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{text}" if days else text


def start_time(start_s: float, now_s: float) -> str:
    """ps's STIME: HH:MM today, MonDD this year, else the year (local time)."""
    then, now = time.localtime(start_s), time.localtime(now_s)
    if then.tm_year != now.tm_year:
        return time.strftime("%Y", then)
    if then.tm_yday != now.tm_yday:
        return time.strftime("%b%d", then)
    return time.strftime("%H:%M", then)


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def top_row(
    p: ProcStat,
    *,
    clk_tck: int,
    boot_s: float,
    uptime: float,
    now_s: float,
    names: Callable[[int], str] = user_name,
) -> list[str]:
    """One `ps -ef` row: UID PID PPID C STIME TTY TIME CMD."""
    used_s = (p.utime + p.stime) // clk_tck
    alive_s = uptime - p.starttime / clk_tck
    # procps: whole percent of the process's life spent on a CPU, at most 99.
    c = min(99, int((p.utime + p.stime) * 100 / clk_tck / alive_s)) if alive_s >= 1 else 0
    cmd = " ".join(p.cmdline) if p.cmdline else f"[{p.comm}]"
    return [
        names(p.euid),
        str(p.pid),
        str(p.ppid),
        str(c),
        start_time(boot_s + p.starttime / clk_tck, now_s),
        tty_name(p.tty_nr),
        cpu_time(used_s),
        cmd,
    ]


def top(pids: Iterable[int], proc: str = "/proc") -> list[list[str]]:
    """`ps -ef` rows of pids (those still alive), by pid."""
    clk_tck = os.sysconf("SC_CLK_TCK")
    boot, up, now = boot_time_s(proc), uptime_s(proc), time.time()
    rows = []
    for pid in sorted(set(pids)):
        p = read_proc(pid, proc)
        if p is not None:
            rows.append(top_row(p, clk_tck=clk_tck, boot_s=boot, uptime=up, now_s=now))
    return rows
