"""linux.resources onto a cgroup v2 directory (runc's fs2 translations)."""

from __future__ import annotations

import posixpath

from kettle.cgroups import common, convert, fsutil
from kettle.cgroups.resources import F
from kettle.errors import FailedPrecondition, InvalidArgument, NotFound

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from kettle.cgroups.resources import BlockIO, Cpu, Hugepage, Memory, Rdma, Resources
    from kettle.cgroups.v2 import V2Manager


def needed_controllers(res: Resources) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    m = res.memory
    if m is not None and any(v for v in (m.limit, m.reservation, m.swap)):
        out.append(("memory", f"{F}.memory"))
    c = res.cpu
    if c is not None:
        if c.shares or c.quota or c.period or c.burst is not None or c.idle is not None:
            out.append(("cpu", f"{F}.cpu"))
        if c.cpus or c.mems:
            out.append(("cpuset", f"{F}.cpu.{'cpus' if c.cpus else 'mems'}"))
    if res.pids_limit is not None:
        out.append(("pids", f"{F}.pids.limit"))
    b = res.block_io
    if b is not None and _io_set(b):
        out.append(("io", f"{F}.blockIO"))
    if res.hugepages:
        out.append(("hugetlb", res.hugepages[0].where))
    if res.rdma:
        out.append(("rdma", f"{F}.rdma"))
    return out


def _refuse_v1_only(res: Resources) -> None:
    m = res.memory
    if m is not None:
        if m.kernel:
            raise InvalidArgument(f"{F}.memory.kernel: cgroup v2 has no kernel memory limit")
        if m.kernelTCP:
            raise InvalidArgument(f"{F}.memory.kernelTCP: cgroup v2 has no kernel TCP limit")
        if m.swappiness is not None:
            raise InvalidArgument(f"{F}.memory.swappiness: cgroup v2 has no per-cgroup swappiness")
        if m.disableOOMKiller:
            raise InvalidArgument(
                f"{F}.memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer"
            )
        if m.useHierarchy is False:
            raise InvalidArgument(f"{F}.memory.useHierarchy: cgroup v2 is always hierarchical")
    c = res.cpu
    if c is not None and (c.realtimeRuntime or c.realtimePeriod):
        field = "realtimeRuntime" if c.realtimeRuntime else "realtimePeriod"
        raise InvalidArgument(f"{F}.cpu.{field}: cgroup v2 has no real-time group scheduling")
    b = res.block_io
    if b is not None:
        if b.leafWeight:
            raise InvalidArgument(f"{F}.blockIO.leafWeight: cgroup v2 has no leaf weights")
        for wd in b.weightDevice:
            if wd.leaf_weight is not None:
                raise InvalidArgument(f"{wd.where}.leafWeight: cgroup v2 has no leaf weights")
    n = res.network
    if n is not None and (n.class_id is not None or n.priorities):
        field = "classID" if n.class_id is not None else "priorities"
        raise InvalidArgument(
            f"{F}.network.{field}: net_cls/net_prio do not exist in cgroup v2 "
            "(use a BPF program or tc instead)"
        )


def apply(mgr: V2Manager, res: Resources) -> None:
    _refuse_v1_only(res)
    if not fsutil.isdir(mgr.dir):
        raise NotFound(f"cgroup {mgr.dir} does not exist")
    controllers = posixpath.join(mgr.dir, "cgroup.controllers")
    available = set(fsutil.read(controllers).split())
    needed = needed_controllers(res)
    missing = [c for c, _ in needed if c not in available]
    why = ""
    if missing:
        # create() may have enabled fewer (or failed quietly): enable what the limits need.
        try:
            common.enable_controllers(mgr.root, mgr.dir, missing, strict=True)
        except FailedPrecondition as e:
            why = f": {e}"  # the check below names the field that needs the controller
        available = set(fsutil.read(controllers).split())
    for controller, what in needed:
        if controller not in available:
            where = "not delegated to this user or " if mgr.rootless else ""
            raise FailedPrecondition(
                f"{what}: cgroup v2 controller {controller} is not available in {mgr.dir} "
                f"({where}not enabled in the parent's cgroup.subtree_control){why}"
            )
    d = mgr.dir
    if res.pids_limit is not None:
        fsutil.write_field(
            posixpath.join(d, "pids.max"), convert.pids_max(res.pids_limit), f"{F}.pids.limit"
        )
    if res.memory is not None:
        _memory(d, res.memory)
    if res.block_io is not None:
        _io(d, res.block_io)
    if res.cpu is not None:
        _cpu(d, res.cpu)
    if res.devices and not mgr.rootless:
        # An unprivileged user cannot attach BPF programs; device files in a rootless
        # container are guarded by their owners and modes instead (runc does the same).
        from kettle.cgroups import bpfdevices

        bpfdevices.install(d, res.devices)
    if res.cpu is not None:
        if res.cpu.cpus:
            fsutil.write_field(posixpath.join(d, "cpuset.cpus"), res.cpu.cpus, f"{F}.cpu.cpus")
        if res.cpu.mems:
            fsutil.write_field(posixpath.join(d, "cpuset.mems"), res.cpu.mems, f"{F}.cpu.mems")
    if res.hugepages:
        write_hugetlb(d, res.hugepages)
    for r in res.rdma:
        line = rdma_line(r)
        if line:
            fsutil.write_field(posixpath.join(d, "rdma.max"), line, f"{F}.rdma[{r.device!r}]")
    if res.unified:
        write_unified(d, res.unified)


def _memory(d: str, m: Memory) -> None:
    w = f"{F}.memory"
    limit = m.limit or 0
    if m.checkBeforeUpdate and limit > 0:
        usage = fsutil.read_int(posixpath.join(d, "memory.current"))
        if limit < usage:
            raise FailedPrecondition(
                f"{w}.limit: {limit} is below the current usage {usage} of {d}"
            )
    swap = convert.swap_v2(m.swap, m.limit, f"{w}.swap")
    if swap is not None:
        path = posixpath.join(d, "memory.swap.max")
        if fsutil.exists(path):
            fsutil.write_field(path, convert.memory_max(swap), f"{w}.swap")
        elif swap != -1:
            raise FailedPrecondition(f"{w}.swap: {path} does not exist (no swap accounting)")
        # else: unlimited swap is what a kernel without swap accounting gives anyway
    if limit:
        fsutil.write_field(posixpath.join(d, "memory.max"), convert.memory_max(limit), f"{w}.limit")
    if m.reservation:
        fsutil.write_field(
            posixpath.join(d, "memory.low"), convert.memory_max(m.reservation), f"{w}.reservation"
        )


def _cpu(d: str, c: Cpu) -> None:
    w = f"{F}.cpu"
    if c.shares:
        fsutil.write_field(
            posixpath.join(d, "cpu.weight"), str(convert.shares_to_weight(c.shares)), f"{w}.shares"
        )
    line = convert.cpu_max(c.quota, c.period)
    if line is not None:
        fsutil.write_field(posixpath.join(d, "cpu.max"), line, f"{w}.quota")
    if c.burst is not None:
        fsutil.write_field(
            posixpath.join(d, "cpu.max.burst"),
            str(c.burst),
            f"{w}.burst",
            "the kernel has no CFS burst (5.14+)",
        )
    if c.idle is not None:
        fsutil.write_field(
            posixpath.join(d, "cpu.idle"), str(c.idle), f"{w}.idle", "the kernel has no cpu.idle"
        )


def _io_set(b: BlockIO) -> bool:
    return bool(
        b.weight
        or b.weightDevice
        or b.throttleReadBpsDevice
        or b.throttleWriteBpsDevice
        or b.throttleReadIOPSDevice
        or b.throttleWriteIOPSDevice
    )


def _io(d: str, b: BlockIO) -> None:
    w = f"{F}.blockIO"
    bfq = posixpath.join(d, "io.bfq.weight")
    has_bfq = fsutil.exists(bfq)
    if b.weight:
        # BFQ takes the v1 value as is; otherwise io.weight with runc's scaling.
        if has_bfq:
            fsutil.write_field(bfq, str(b.weight), f"{w}.weight")
        else:
            fsutil.write_field(
                posixpath.join(d, "io.weight"),
                str(convert.blkio_weight_to_io_weight(b.weight)),
                f"{w}.weight",
            )
    for wd in b.weightDevice:
        if wd.weight is None:
            continue
        if not has_bfq:
            raise FailedPrecondition(
                f"{wd.where}.weight: per-device weights need the BFQ scheduler ({bfq} is missing)"
            )
        fsutil.write_field(bfq, f"{wd.major}:{wd.minor} {wd.weight}", f"{wd.where}.weight")
    for key, devs in (
        ("rbps", b.throttleReadBpsDevice),
        ("wbps", b.throttleWriteBpsDevice),
        ("riops", b.throttleReadIOPSDevice),
        ("wiops", b.throttleWriteIOPSDevice),
    ):
        for td in devs:
            fsutil.write_field(
                posixpath.join(d, "io.max"), f"{td.major}:{td.minor} {key}={td.rate}", td.where
            )


def write_hugetlb(d: str, pages: Sequence[Hugepage]) -> None:
    for h in pages:
        fsutil.write_field(
            posixpath.join(d, f"hugetlb.{h.page_size}.max"),
            str(h.limit),
            f"{h.where}.limit",
            f"hugepage size {h.page_size} is not supported or hugetlb is not enabled",
        )
        rsvd = posixpath.join(d, f"hugetlb.{h.page_size}.rsvd.max")
        # Reservations count too since 5.7; without the same limit a mapping could reserve
        # more than the limit and fault later.
        if fsutil.exists(rsvd):
            fsutil.write_field(rsvd, str(h.limit), f"{h.where}.limit")


def rdma_line(r: Rdma) -> str:
    parts = [r.device]
    if r.hca_handles is not None:
        parts.append(f"hca_handle={r.hca_handles}")
    if r.hca_objects is not None:
        parts.append(f"hca_object={r.hca_objects}")
    return " ".join(parts) if len(parts) > 1 else ""


def write_unified(d: str, unified: Mapping[str, str]) -> None:
    for key, value in unified.items():
        what = f"{F}.unified[{key!r}]"
        controller = key.partition(".")[0]
        fsutil.write_field(
            posixpath.join(d, key),
            value,
            what,
            f"controller {controller} is not enabled for this cgroup or the key does not exist",
        )
