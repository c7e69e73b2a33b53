"""Stats for containerd: the runtime's ``events --stats`` data as containerd's cgroup Metrics.

Both backends report runc's stats object (the library directly, a binary through ``events
--stats``); containerd wants ``io.containerd.cgroups.v1.Metrics`` on a v1 or hybrid host (the
memory controller is v1 there) and ``io.containerd.cgroups.v2.Metrics`` on a cgroup2 host,
packed in an Any with that type URL.  Memory counters come from the raw memory.stat that the
stats object carries.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kettle.proto.any_pb import Any as AnyMsg

_MAX_UINT64 = (1 << 64) - 1

# MemoryStat field -> memory.stat key (v1), where the names differ only by spelling.
_V1_MEMORY = {
    "cache": "cache",
    "rss": "rss",
    "rss_huge": "rss_huge",
    "mapped_file": "mapped_file",
    "dirty": "dirty",
    "writeback": "writeback",
    "pg_pg_in": "pgpgin",
    "pg_pg_out": "pgpgout",
    "pg_fault": "pgfault",
    "pg_maj_fault": "pgmajfault",
    "inactive_anon": "inactive_anon",
    "active_anon": "active_anon",
    "inactive_file": "inactive_file",
    "active_file": "active_file",
    "unevictable": "unevictable",
    "hierarchical_memory_limit": "hierarchical_memory_limit",
    "hierarchical_swap_limit": "hierarchical_memsw_limit",
}

_V2_MEMORY = (
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
)


def _u64(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return min(max(number, 0), _MAX_UINT64)


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def v1_metrics(stats: dict[str, Any], oom_kills: int = 0) -> Any:
    from kettle.proto import cgroups_v1_pb as pb

    m = pb.Metrics()
    m.pids = pb.PidsStat(
        current=_u64(_get(stats, "pids", "current")), limit=_u64(_get(stats, "pids", "limit"))
    )
    usage = _get(stats, "cpu", "usage") or {}
    thr = _get(stats, "cpu", "throttling") or {}
    m.cpu = pb.CPUStat(
        usage=pb.CPUUsage(
            total=_u64(usage.get("total")),
            kernel=_u64(usage.get("kernel")),
            user=_u64(usage.get("user")),
            per_cpu=[_u64(v) for v in usage.get("percpu") or ()],
        ),
        throttling=pb.Throttle(
            periods=_u64(thr.get("periods")),
            throttled_periods=_u64(thr.get("throttledPeriods")),
            throttled_time=_u64(thr.get("throttledTime")),
        ),
    )
    mem = stats.get("memory") or {}
    raw = mem.get("raw") or {}
    ms = pb.MemoryStat()
    for field, key in _V1_MEMORY.items():
        setattr(ms, field, _u64(raw.get(key)))
        total = "total_" + field
        if hasattr(ms, total):
            setattr(ms, total, _u64(raw.get("total_" + key)))
    ms.cache = _u64(mem.get("cache", raw.get("cache")))

    def entry(name: str) -> Any:
        e = mem.get(name) or {}
        return pb.MemoryEntry(
            limit=_u64(e.get("limit")),
            usage=_u64(e.get("usage")),
            max=_u64(e.get("max")),
            failcnt=_u64(e.get("failcnt")),
        )

    ms.usage, ms.swap, ms.kernel, ms.kernel_tcp = (
        entry("usage"),
        entry("swap"),
        entry("kernel"),
        entry("kernelTCP"),
    )
    m.memory = ms
    blk = stats.get("blkio") or {}

    def entries(key: str) -> list[Any]:
        return [
            pb.BlkIOEntry(
                op=str(e.get("op", "")),
                major=_u64(e.get("major")),
                minor=_u64(e.get("minor")),
                value=_u64(e.get("value")),
            )
            for e in blk.get(key) or ()
        ]

    m.blkio = pb.BlkIOStat(
        io_service_bytes_recursive=entries("ioServiceBytesRecursive"),
        io_serviced_recursive=entries("ioServicedRecursive"),
        io_queued_recursive=entries("ioQueueRecursive"),
        io_service_time_recursive=entries("ioServiceTimeRecursive"),
        io_wait_time_recursive=entries("ioWaitTimeRecursive"),
        io_merged_recursive=entries("ioMergedRecursive"),
        io_time_recursive=entries("ioTimeRecursive"),
        sectors_recursive=entries("sectorsRecursive"),
    )
    m.hugetlb = [
        pb.HugetlbStat(
            usage=_u64(v.get("usage")),
            max=_u64(v.get("max")),
            failcnt=_u64(v.get("failcnt")),
            pagesize=size,
        )
        for size, v in sorted((stats.get("hugetlb") or {}).items())
    ]
    if oom_kills:
        m.memory_oom_control = pb.MemoryOomControl(oom_kill=_u64(oom_kills))
    return m


def v2_metrics(stats: dict[str, Any], oom_kills: int = 0) -> Any:
    from kettle.proto import cgroups_v2_pb as pb

    m = pb.Metrics()
    m.pids = pb.PidsStat(
        current=_u64(_get(stats, "pids", "current")), limit=_u64(_get(stats, "pids", "limit"))
    )
    usage = _get(stats, "cpu", "usage") or {}
    thr = _get(stats, "cpu", "throttling") or {}
    m.cpu = pb.CPUStat(
        usage_usec=_u64(usage.get("total")) // 1000,
        user_usec=_u64(usage.get("user")) // 1000,
        system_usec=_u64(usage.get("kernel")) // 1000,
        nr_periods=_u64(thr.get("periods")),
        nr_throttled=_u64(thr.get("throttledPeriods")),
        throttled_usec=_u64(thr.get("throttledTime")) // 1000,
    )
    mem = stats.get("memory") or {}
    raw = mem.get("raw") or {}
    ms = pb.MemoryStat()
    for field in _V2_MEMORY:
        setattr(ms, field, _u64(raw.get(field)))
    mu = mem.get("usage") or {}
    sw = mem.get("swap") or {}
    ms.usage = _u64(mu.get("usage"))
    ms.usage_limit = _u64(mu.get("limit"))
    ms.max_usage = _u64(mu.get("max"))
    # runc reports swap as memory+swap (v1's memsw); containerd's v2 metrics want swap alone.
    ms.swap_usage = max(_u64(sw.get("usage")) - ms.usage, 0)
    swap_limit = _u64(sw.get("limit"))
    if swap_limit not in (0, _MAX_UINT64) and ms.usage_limit not in (0, _MAX_UINT64):
        swap_limit = max(swap_limit - ms.usage_limit, 0)
    ms.swap_limit = swap_limit
    ms.swap_max_usage = _u64(sw.get("max"))
    m.memory = ms
    devices: dict[tuple[int, int], Any] = {}
    blk = stats.get("blkio") or {}
    for key, names in (("ioServiceBytesRecursive", "bytes"), ("ioServicedRecursive", "ios")):
        for e in blk.get(key) or ():
            dev = (_u64(e.get("major")), _u64(e.get("minor")))
            io = devices.setdefault(dev, pb.IOEntry(major=dev[0], minor=dev[1]))
            op = str(e.get("op", "")).lower()
            if op in ("read", "write"):
                setattr(io, ("r" if op == "read" else "w") + names, _u64(e.get("value")))
    m.io = pb.IOStat(usage=[devices[k] for k in sorted(devices)])
    m.hugetlb = [
        pb.HugeTlbStat(current=_u64(v.get("usage")), max=_u64(v.get("max")), pagesize=size)
        for size, v in sorted((stats.get("hugetlb") or {}).items())
    ]
    if oom_kills:
        m.memory_events = pb.MemoryEvents(oom_kill=_u64(oom_kills))
    return m


def pack(stats: dict[str, Any], cgroup_v2: bool, oom_kills: int = 0) -> AnyMsg:
    from kettle.proto import wkt

    metrics = v2_metrics(stats, oom_kills) if cgroup_v2 else v1_metrics(stats, oom_kills)
    return wkt.pack_any(metrics)
