"""linux.resources onto cgroup v1 hierarchies (and, on a hybrid host, the unified one)."""

from __future__ import annotations

import errno
import posixpath

from kettle.cgroups import common, fsutil
from kettle.cgroups import devices as devrules
from kettle.cgroups.resources import F
from kettle.errors import FailedPrecondition, InvalidArgument, SyscallError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from kettle.cgroups.resources import BlockIO, Cpu, Memory, Resources
    from kettle.cgroups.v1 import V1Manager


def needed_controllers(res: Resources) -> list[tuple[str, str]]:
    """(controller, field) for each v1 controller res needs."""
    out: list[tuple[str, str]] = []
    m = res.memory
    if m is not None and any(
        v is not None
        for v in (
            m.limit,
            m.reservation,
            m.swap,
            m.kernel,
            m.kernelTCP,
            m.swappiness,
            m.disableOOMKiller,
            m.useHierarchy,
        )
    ):
        out.append(("memory", f"{F}.memory"))
    c = res.cpu
    if c is not None:
        if any(
            v is not None
            for v in (
                c.shares,
                c.quota,
                c.period,
                c.burst,
                c.realtimeRuntime,
                c.realtimePeriod,
                c.idle,
            )
        ):
            out.append(("cpu", f"{F}.cpu"))
        if c.cpus or c.mems:
            out.append(("cpuset", f"{F}.cpu.{'cpus' if c.cpus else 'mems'}"))
    if res.pids_limit is not None:
        out.append(("pids", f"{F}.pids.limit"))
    b = res.block_io
    if b is not None and (
        b.weight is not None
        or b.leafWeight is not None
        or b.weightDevice
        or b.throttleReadBpsDevice
        or b.throttleWriteBpsDevice
        or b.throttleReadIOPSDevice
        or b.throttleWriteIOPSDevice
    ):
        out.append(("blkio", f"{F}.blockIO"))
    if res.network is not None:
        if res.network.class_id is not None:
            out.append(("net_cls", f"{F}.network.classID"))
        if res.network.priorities:
            out.append(("net_prio", f"{F}.network.priorities"))
    if res.rdma:
        out.append(("rdma", f"{F}.rdma"))
    if res.devices:
        out.append(("devices", f"{F}.devices"))
    return out


def apply(mgr: V1Manager, res: Resources) -> None:
    # Refuse what this host cannot do before writing anything.
    for controller, what in needed_controllers(res):
        mgr.dir_for(controller, what)
    if res.unified and mgr.unified is None:
        raise InvalidArgument(f"{F}.unified: cgroup v2 keys cannot be set on a cgroup v1 host")
    if res.hugepages and "hugetlb" not in mgr.paths and not _unified_hugetlb(mgr):
        raise FailedPrecondition(
            f"{res.hugepages[0].where}: cgroup v1 controller hugetlb is not mounted"
        )

    if res.cpu is not None:
        _cpuset(mgr, res.cpu)
    if res.devices:
        _devices(mgr, res.devices)
    if res.memory is not None:
        _memory(mgr, res.memory)
    if res.cpu is not None:
        _cpu(mgr, res.cpu)
    if res.pids_limit is not None:
        from kettle.cgroups.convert import pids_max

        _w(mgr, "pids", "pids.max", pids_max(res.pids_limit), f"{F}.pids.limit")
    if res.block_io is not None:
        _blkio(mgr, res.block_io)
    if res.hugepages:
        _hugetlb(mgr, res)
    if res.network is not None:
        if res.network.class_id is not None:
            _w(mgr, "net_cls", "net_cls.classid", str(res.network.class_id), f"{F}.network.classID")
        for i, (name, prio) in enumerate(res.network.priorities):
            _w(
                mgr,
                "net_prio",
                "net_prio.ifpriomap",
                f"{name} {prio}",
                f"{F}.network.priorities[{i}]",
            )
    if res.rdma or res.unified:
        from kettle.cgroups import setv2

        for r in res.rdma:
            line = setv2.rdma_line(r)
            if line:
                _w(mgr, "rdma", "rdma.max", line, f"{F}.rdma[{r.device!r}]")
        if res.unified and mgr.unified is not None:
            setv2.write_unified(mgr.unified, res.unified)


def _w(mgr: V1Manager, controller: str, name: str, value: str, what: str) -> None:
    path = posixpath.join(mgr.dir_for(controller, what), name)
    fsutil.write_field(path, value, what)


# --- devices ---------------------------------------------------------------------------------


def _devices(mgr: V1Manager, rules: list[devrules.Rule]) -> None:
    if mgr.rootless:
        # An unprivileged user cannot write devices.allow/deny; device files in a rootless
        # container are guarded by their owners and modes instead (runc does the same).
        return
    d = mgr.dir_for("devices", f"{F}.devices")
    target = devrules.to_v1(rules)
    current = devrules.parse_v1_list(fsutil.read(posixpath.join(d, "devices.list")))
    for name, line in devrules.v1_writes(current, target):
        fsutil.write_field(posixpath.join(d, name), line, f"{F}.devices")


# --- memory ----------------------------------------------------------------------------------


def _memory(mgr: V1Manager, m: Memory) -> None:
    w = f"{F}.memory"
    d = mgr.dir_for("memory", w)
    limit = m.limit or 0  # 0 is "not set", as in runc
    swap = m.swap or 0
    memsw = posixpath.join(d, "memory.memsw.limit_in_bytes")
    has_memsw = fsutil.exists(memsw)
    if m.checkBeforeUpdate and limit > 0:
        usage = fsutil.read_int(posixpath.join(d, "memory.usage_in_bytes"))
        if limit < usage:
            raise FailedPrecondition(
                f"{w}.limit: {limit} is below the current usage {usage} of {d}"
            )
    if limit == -1 and swap == 0 and has_memsw:
        swap = -1  # unlimited memory with swap unset lifts the swap limit too (runc)
    if swap and not has_memsw:
        if swap != -1:
            raise FailedPrecondition(
                f"{w}.swap: {memsw} does not exist (the kernel does not account swap)"
            )
        swap = 0  # nothing to lift without swap accounting

    def set_limit() -> None:
        if not limit:
            return
        path = posixpath.join(d, "memory.limit_in_bytes")
        try:
            fsutil.write(path, str(limit))
        except SyscallError as e:
            if e.errno != errno.EBUSY:
                raise SyscallError(e.call, e.errno, e.path, f"{w}.limit = {limit}") from None
            usage = fsutil.read_int(posixpath.join(d, "memory.usage_in_bytes"))
            peak = fsutil.read_int(posixpath.join(d, "memory.max_usage_in_bytes"))
            raise FailedPrecondition(
                f"{w}.limit: unable to set memory limit to {limit} in {d} "
                f"(current usage: {usage}, peak usage: {peak})"
            ) from None

    def set_swap() -> None:
        if swap:
            fsutil.write_field(memsw, str(swap), f"{w}.swap")

    # memory.limit <= memsw.limit must hold after each write: raise the bigger one first.
    if limit and swap:
        current = fsutil.read_int(posixpath.join(d, "memory.limit_in_bytes"))
        if swap == -1 or current < swap:
            set_swap()
            set_limit()
        else:
            set_limit()
            set_swap()
    else:
        set_limit()
        set_swap()

    if m.reservation:
        fsutil.write_field(
            posixpath.join(d, "memory.soft_limit_in_bytes"),
            str(m.reservation),
            f"{w}.reservation",
        )
    if m.kernel:
        fsutil.write_field(
            posixpath.join(d, "memory.kmem.limit_in_bytes"),
            str(m.kernel),
            f"{w}.kernel",
            "the kernel has no kernel memory accounting",
        )
    if m.kernelTCP:
        fsutil.write_field(
            posixpath.join(d, "memory.kmem.tcp.limit_in_bytes"),
            str(m.kernelTCP),
            f"{w}.kernelTCP",
            "the kernel has no kernel TCP memory accounting",
        )
    if m.swappiness is not None:
        fsutil.write_field(
            posixpath.join(d, "memory.swappiness"), str(m.swappiness), f"{w}.swappiness"
        )
    if m.disableOOMKiller is not None:
        fsutil.write_field(
            posixpath.join(d, "memory.oom_control"),
            "1" if m.disableOOMKiller else "0",
            f"{w}.disableOOMKiller",
        )
    if m.useHierarchy is not None:
        fsutil.write_field(
            posixpath.join(d, "memory.use_hierarchy"),
            "1" if m.useHierarchy else "0",
            f"{w}.useHierarchy",
        )


# --- cpu and cpuset -------------------------------------------------------------------------


def _cpuset(mgr: V1Manager, c: Cpu) -> None:
    if c.cpus:
        _w(mgr, "cpuset", "cpuset.cpus", c.cpus, f"{F}.cpu.cpus")
    if c.mems:
        _w(mgr, "cpuset", "cpuset.mems", c.mems, f"{F}.cpu.mems")


def _cpu(mgr: V1Manager, c: Cpu) -> None:
    w = f"{F}.cpu"
    if c.realtimePeriod or c.realtimeRuntime:
        # The period first: a runtime above the current period is refused.
        if c.realtimePeriod:
            _w(mgr, "cpu", "cpu.rt_period_us", str(c.realtimePeriod), f"{w}.realtimePeriod")
        if c.realtimeRuntime:
            _w(mgr, "cpu", "cpu.rt_runtime_us", str(c.realtimeRuntime), f"{w}.realtimeRuntime")
    if c.shares:
        d = mgr.dir_for("cpu", w)
        path = posixpath.join(d, "cpu.shares")
        fsutil.write_field(path, str(c.shares), f"{w}.shares")
        # The kernel clamps silently; say so instead of running with another value.
        got = fsutil.read_int(path)
        if got != c.shares:
            bound = "maximum" if c.shares > got else "minimum"
            raise InvalidArgument(
                f"{w}.shares: {c.shares} is out of range: the {bound} allowed cpu-shares is {got}"
            )
    period_pending = ""
    if c.period:
        try:
            _w(mgr, "cpu", "cpu.cfs_period_us", str(c.period), f"{w}.period")
        except SyscallError as e:
            # A smaller period can be refused (EINVAL) while the old quota/new period exceeds
            # the parent's bandwidth; setting the quota first then makes it fit.
            if e.errno != errno.EINVAL or not c.quota:
                raise
            period_pending = str(c.period)
    if c.quota:
        _w(mgr, "cpu", "cpu.cfs_quota_us", str(c.quota), f"{w}.quota")
        if period_pending:
            _w(mgr, "cpu", "cpu.cfs_period_us", period_pending, f"{w}.period")
    if c.burst is not None:
        _w(mgr, "cpu", "cpu.cfs_burst_us", str(c.burst), f"{w}.burst")
    if c.idle is not None:
        _w(mgr, "cpu", "cpu.idle", str(c.idle), f"{w}.idle")


# --- blkio -----------------------------------------------------------------------------------


def _blkio(mgr: V1Manager, b: BlockIO) -> None:
    w = f"{F}.blockIO"
    if (
        b.weight is None
        and b.leafWeight is None
        and not (
            b.weightDevice
            or b.throttleReadBpsDevice
            or b.throttleWriteBpsDevice
            or b.throttleReadIOPSDevice
            or b.throttleWriteIOPSDevice
        )
    ):
        return
    d = mgr.dir_for("blkio", w)
    # CFQ's blkio.weight is gone since 5.0; BFQ offers blkio.bfq.weight instead.
    prefix = "blkio." if fsutil.exists(posixpath.join(d, "blkio.weight")) else "blkio.bfq."
    no_weight = "no blkio.weight or blkio.bfq.weight: no proportional I/O scheduler (BFQ)"
    if b.weight:
        fsutil.write_field(
            posixpath.join(d, prefix + "weight"), str(b.weight), f"{w}.weight", no_weight
        )
    if b.leafWeight:
        fsutil.write_field(
            posixpath.join(d, "blkio.leaf_weight"),
            str(b.leafWeight),
            f"{w}.leafWeight",
            "leaf weights were removed with CFQ",
        )
    for wd in b.weightDevice:
        if wd.weight is not None:
            fsutil.write_field(
                posixpath.join(d, prefix + "weight_device"),
                f"{wd.major}:{wd.minor} {wd.weight}",
                f"{wd.where}.weight",
                no_weight,
            )
        if wd.leaf_weight is not None:
            fsutil.write_field(
                posixpath.join(d, "blkio.leaf_weight_device"),
                f"{wd.major}:{wd.minor} {wd.leaf_weight}",
                f"{wd.where}.leafWeight",
                "leaf weights were removed with CFQ",
            )
    for name, devs in (
        ("read_bps_device", b.throttleReadBpsDevice),
        ("write_bps_device", b.throttleWriteBpsDevice),
        ("read_iops_device", b.throttleReadIOPSDevice),
        ("write_iops_device", b.throttleWriteIOPSDevice),
    ):
        for td in devs:
            fsutil.write_field(
                posixpath.join(d, "blkio.throttle." + name),
                f"{td.major}:{td.minor} {td.rate}",
                td.where,
            )


# --- hugetlb ---------------------------------------------------------------------------------


def _unified_hugetlb(mgr: V1Manager) -> bool:
    """On a hybrid host hugetlb may sit on the unified mount instead (as on some kernels)."""
    if mgr.unified is None or mgr.unified_top is None:
        return False
    text = fsutil.read(posixpath.join(mgr.unified_top, "cgroup.controllers"))
    return "hugetlb" in text.split()


def _hugetlb(mgr: V1Manager, res: Resources) -> None:
    if "hugetlb" in mgr.paths:
        d = mgr.paths["hugetlb"]
        for h in res.hugepages:
            fsutil.write_field(
                posixpath.join(d, f"hugetlb.{h.page_size}.limit_in_bytes"),
                str(h.limit),
                f"{h.where}.limit",
                f"hugepage size {h.page_size} is not supported",
            )
        return
    from kettle.cgroups import setv2

    assert mgr.unified is not None and mgr.unified_top is not None
    common.enable_controllers(mgr.unified_top, mgr.unified, ["hugetlb"], strict=True)
    setv2.write_hugetlb(mgr.unified, res.hugepages)
