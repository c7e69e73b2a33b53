"""Translations between OCI values (cgroup v1 units) and cgroup v2 file contents.

The formulas are the ones runc and crun use, so that a container gets the same v2 settings
whichever of them created it.
"""

from __future__ import annotations

from kettle.errors import InvalidArgument


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cpu.weight (1..10000); 0 means "not set" and stays 0."""
    if shares == 0:
        return 0
    # Below the v1 minimum of 2 the formula would give 0, which cpu.weight refuses.
    return 1 + ((max(shares, 2) - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000); 0 means "not set" and stays 0."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def cpu_max(quota: int | None, period: int | None) -> str | None:
    """The cpu.max line for quota/period, or None when neither is set (runc's format).

    A missing or negative quota is "max"; a missing period is left out so the kernel keeps
    the current one.
    """
    q = quota or 0
    p = period or 0
    if q == 0 and p == 0:
        return None
    text = str(q) if q > 0 else "max"
    if p:
        text += f" {p}"
    return text


def pids_max(limit: int) -> str:
    """pids.max for linux.resources.pids.limit: -1 and 0 are unlimited."""
    return "max" if limit <= 0 else str(limit)


def memory_max(value: int) -> str:
    """memory.max / memory.low / memory.swap.max: -1 is "max"."""
    return "max" if value == -1 else str(value)


def swap_v2(swap: int | None, limit: int | None, field: str) -> int | None:
    """memory.swap.max from OCI swap (memory+swap, v1 style); None: leave the file alone.

    Follows runc's ConvertMemorySwapToCgroupV2Value: -1 stays unlimited, 0 is unset, memory -1
    with swap unset also lifts the swap limit.
    """
    s = swap or 0
    m = limit or 0
    if m == -1 and s == 0:
        return -1
    if s in (-1, 0):
        return None if s == 0 else -1
    if m in (0, -1):
        raise InvalidArgument(f"{field}: a swap limit needs a memory limit")
    if m < 0:
        raise InvalidArgument(f"{field}: invalid memory limit {m}")
    if s < m:
        raise InvalidArgument(f"{field}: memory+swap limit {s} is below the memory limit {m}")
    return s - m


_PAGE_UNITS = ("KB", "MB", "GB", "TB", "PB")


def is_page_size(text: str) -> bool:
    """Digits and a unit, as in "2MB" or "1GB" (str methods: re costs milliseconds to import)."""
    digits, unit = text[:-2], text[-2:]
    return unit in _PAGE_UNITS and digits.isascii() and digits.isdigit()


def hugepage_size(page_size: object, field: str) -> str:
    """Validate an OCI hugepage size ("2MB", "1GB") as used in hugetlb file names."""
    if not isinstance(page_size, str) or not is_page_size(page_size):
        raise InvalidArgument(f"{field}: invalid hugepage size {page_size!r} (like 2MB or 1GB)")
    return page_size
