"""The "data" object of ``runc events --stats`` from v1 or v2 cgroup files.

Field names and units are runc's (types.Stats); fields runc marks omitempty are left out when
zero, so a consumer sees the same JSON from Kettle as from runc.
"""

from __future__ import annotations

import errno
import os
import posixpath

from kettle.cgroups import fsutil
from kettle.cgroups.convert import is_page_size
from kettle.errors import SyscallError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from typing import Any

_NS = 1_000_000_000


def _opt(path: str) -> str | None:
    """A file's text, or None when the kernel or controller does not provide it."""
    try:
        return fsutil.read(path)
    except SyscallError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
            return None
        raise


def _uint(path: str) -> int:
    text = _opt(path)
    if text is None:
        return 0
    text = text.strip()
    if text == "max":
        return fsutil.MAX_UINT64
    try:
        return int(text)
    except ValueError:
        return 0


def _keyed(path: str) -> dict[str, int]:
    return fsutil.read_keyed(path) if fsutil.exists(path) else {}


def _drop_zero(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    for k in keys:
        if not d.get(k):
            d.pop(k, None)
    return d


def _mem_entry(limit: int, usage: int, peak: int, failcnt: int) -> dict[str, Any]:
    return _drop_zero(
        {"limit": limit, "usage": usage, "max": peak, "failcnt": failcnt}, "usage", "max"
    )


def _cpu(
    total: int,
    percpu: list[int],
    pk: list[int],
    pu: list[int],
    kernel: int,
    user: int,
    periods: int,
    throttled: int,
    throttled_ns: int,
) -> dict[str, Any]:
    usage = _drop_zero(
        {
            "total": total,
            "percpu": percpu,
            "percpu_kernel": pk,
            "percpu_user": pu,
            "kernel": kernel,
            "user": user,
        },
        "total",
        "percpu",
        "percpu_kernel",
        "percpu_user",
    )
    throttling = _drop_zero(
        {"periods": periods, "throttledPeriods": throttled, "throttledTime": throttled_ns},
        "periods",
        "throttledPeriods",
        "throttledTime",
    )
    return {"usage": usage, "throttling": throttling}


def _pids(current: int, limit: int) -> dict[str, Any]:
    # runc reports an unlimited pids.max as 0 (omitted).
    if limit == fsutil.MAX_UINT64:
        limit = 0
    return _drop_zero({"current": current, "limit": limit}, "current", "limit")


def _hugepage_sizes(d: str) -> list[str]:
    """The sizes that hugetlb.<size>.* files in d name."""
    try:
        names = os.listdir(d)
    except OSError:
        return []
    sizes = set()
    for n in names:
        if n.startswith("hugetlb."):
            size, dot, _ = n[len("hugetlb.") :].partition(".")
            if dot and is_page_size(size):
                sizes.add(size)
    return sorted(sizes)


def _blkio_entries(text: str | None) -> list[dict[str, Any]]:
    """v1 blkio lines "8:0 Read 123" (the "Total 123" line is not per device)."""
    out: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        out.append(
            _drop_zero(
                {"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])},
                "major",
                "minor",
                "op",
                "value",
            )
        )
    return out


# --- v1 --------------------------------------------------------------------------------------


def v1(paths: dict[str, str], unified: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cpu = paths.get("cpu")
    acct = paths.get("cpuacct")
    total, percpu, pk, pu, kernel, user = 0, [], [], [], 0, 0
    if acct:
        total = _uint(posixpath.join(acct, "cpuacct.usage"))
        percpu = [
            int(x) for x in (_opt(posixpath.join(acct, "cpuacct.usage_percpu")) or "").split()
        ]
        for line in (_opt(posixpath.join(acct, "cpuacct.usage_all")) or "").splitlines()[1:]:
            parts = line.split()
            if len(parts) == 3:
                pu.append(int(parts[1]))
                pk.append(int(parts[2]))
        ticks = os.sysconf("SC_CLK_TCK")
        st = _keyed(posixpath.join(acct, "cpuacct.stat"))
        user = st.get("user", 0) * _NS // ticks
        kernel = st.get("system", 0) * _NS // ticks
    thr = _keyed(posixpath.join(cpu, "cpu.stat")) if cpu else {}
    out["cpu"] = _cpu(
        total,
        percpu,
        pk,
        pu,
        kernel,
        user,
        thr.get("nr_periods", 0),
        thr.get("nr_throttled", 0),
        thr.get("throttled_time", 0),
    )

    mem = paths.get("memory")
    if mem:

        def entry(prefix: str) -> dict[str, Any]:
            p = posixpath.join(mem, prefix)
            return _mem_entry(
                _uint(p + "limit_in_bytes"),
                _uint(p + "usage_in_bytes"),
                _uint(p + "max_usage_in_bytes"),
                _uint(p + "failcnt"),
            )

        raw = _keyed(posixpath.join(mem, "memory.stat"))
        out["memory"] = _drop_zero(
            {
                "cache": raw.get("total_cache", raw.get("cache", 0)),
                "usage": entry("memory."),
                "swap": entry("memory.memsw."),
                "kernel": entry("memory.kmem."),
                "kernelTCP": entry("memory.kmem.tcp."),
                "raw": raw,
            },
            "cache",
            "raw",
        )
    else:
        out["memory"] = {}

    pids = paths.get("pids")
    out["pids"] = (
        _pids(_uint(posixpath.join(pids, "pids.current")), _uint(posixpath.join(pids, "pids.max")))
        if pids
        else {}
    )

    blk = paths.get("blkio")
    blkio: dict[str, Any] = {}
    if blk:
        for stem in ("blkio.", "blkio.bfq.", "blkio.throttle."):
            svc = _opt(posixpath.join(blk, stem + "io_service_bytes_recursive"))
            if svc is None:
                continue
            blkio["ioServiceBytesRecursive"] = _blkio_entries(svc)
            blkio["ioServicedRecursive"] = _blkio_entries(
                _opt(posixpath.join(blk, stem + "io_serviced_recursive"))
            )
            break
    out["blkio"] = _drop_zero(blkio, "ioServiceBytesRecursive", "ioServicedRecursive")

    huge = paths.get("hugetlb")
    if huge:
        out["hugetlb"] = {
            size: _drop_zero(
                {
                    "usage": _uint(posixpath.join(huge, f"hugetlb.{size}.usage_in_bytes")),
                    "max": _uint(posixpath.join(huge, f"hugetlb.{size}.max_usage_in_bytes")),
                    "failcnt": _uint(posixpath.join(huge, f"hugetlb.{size}.failcnt")),
                },
                "usage",
                "max",
            )
            for size in _hugepage_sizes(huge)
        }
    elif unified is not None:
        out["hugetlb"] = _v2_hugetlb(unified)
    else:
        out["hugetlb"] = {}
    return out


# --- v2 --------------------------------------------------------------------------------------


def _v2_hugetlb(d: str) -> dict[str, Any]:
    return {
        size: _drop_zero(
            {
                "usage": _uint(posixpath.join(d, f"hugetlb.{size}.current")),
                "failcnt": _keyed(posixpath.join(d, f"hugetlb.{size}.events")).get("max", 0),
            },
            "usage",
        )
        for size in _hugepage_sizes(d)
    }


def v2(d: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    st = _keyed(posixpath.join(d, "cpu.stat"))
    out["cpu"] = _cpu(
        st.get("usage_usec", 0) * 1000,
        [],
        [],
        [],
        st.get("system_usec", 0) * 1000,
        st.get("user_usec", 0) * 1000,
        st.get("nr_periods", 0),
        st.get("nr_throttled", 0),
        st.get("throttled_usec", 0) * 1000,
    )

    if fsutil.exists(posixpath.join(d, "memory.current")):
        usage = _uint(posixpath.join(d, "memory.current"))
        limit = _uint(posixpath.join(d, "memory.max"))
        swap_usage = _uint(posixpath.join(d, "memory.swap.current"))
        swap_limit = _uint(posixpath.join(d, "memory.swap.max"))
        # runc reports swap as memory+swap, as v1's memsw did.
        if swap_limit != fsutil.MAX_UINT64 and limit != fsutil.MAX_UINT64:
            swap_limit += limit
        elif fsutil.exists(posixpath.join(d, "memory.swap.max")):
            swap_limit = fsutil.MAX_UINT64
        raw = _keyed(posixpath.join(d, "memory.stat"))
        out["memory"] = _drop_zero(
            {
                "cache": raw.get("file", 0),
                "usage": _mem_entry(limit, usage, _uint(posixpath.join(d, "memory.peak")), 0),
                "swap": _mem_entry(
                    swap_limit, swap_usage + usage, _uint(posixpath.join(d, "memory.swap.peak")), 0
                ),
                "kernel": _mem_entry(0, 0, 0, 0),
                "kernelTCP": _mem_entry(0, 0, 0, 0),
                "raw": raw,
            },
            "cache",
            "raw",
        )
    else:
        out["memory"] = {}

    out["pids"] = (
        _pids(_uint(posixpath.join(d, "pids.current")), _uint(posixpath.join(d, "pids.max")))
        if fsutil.exists(posixpath.join(d, "pids.current"))
        else {}
    )

    svc: list[dict[str, Any]] = []
    ios: list[dict[str, Any]] = []
    for line in (_opt(posixpath.join(d, "io.stat")) or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        maj, _, mnr = parts[0].partition(":")
        major, minor = int(maj), int(mnr)
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for key, op, target in (
            ("rbytes", "Read", svc),
            ("wbytes", "Write", svc),
            ("rios", "Read", ios),
            ("wios", "Write", ios),
        ):
            if key in kv:
                target.append(
                    _drop_zero(
                        {"major": major, "minor": minor, "op": op, "value": int(kv[key])},
                        "major",
                        "minor",
                        "value",
                    )
                )
    out["blkio"] = _drop_zero(
        {"ioServiceBytesRecursive": svc, "ioServicedRecursive": ios},
        "ioServiceBytesRecursive",
        "ioServicedRecursive",
    )
    out["hugetlb"] = _v2_hugetlb(d)
    return out
