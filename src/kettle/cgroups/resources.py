"""OCI linux.resources, checked once and turned into typed values for the v1 and v2 writers.

Unknown fields and values of the wrong type are InvalidArgument naming the field, so that no
part of a spec is silently dropped.
"""

from __future__ import annotations

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping

from kettle.cgroups import convert, devices
from kettle.errors import InvalidArgument

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from typing import Any

F = "linux.resources"


# Plain classes rather than dataclasses: importing dataclasses (inspect, ast, re) and building
# the classes cost about 15 ms on every create and update.  Field names are the OCI ones
# (camelCase), so that messages and FIELDS name them exactly.


class Memory:
    FIELDS = (
        "limit",
        "reservation",
        "swap",
        "kernel",
        "kernelTCP",
        "swappiness",
        "disableOOMKiller",
        "useHierarchy",
        "checkBeforeUpdate",
    )
    __slots__ = FIELDS

    def __init__(self) -> None:
        self.limit: int | None = None
        self.reservation: int | None = None
        self.swap: int | None = None
        self.kernel: int | None = None
        self.kernelTCP: int | None = None
        self.swappiness: int | None = None
        self.disableOOMKiller: bool | None = None
        self.useHierarchy: bool | None = None
        self.checkBeforeUpdate: bool | None = None


class Cpu:
    FIELDS = (
        "shares",
        "quota",
        "burst",
        "period",
        "realtimeRuntime",
        "realtimePeriod",
        "cpus",
        "mems",
        "idle",
    )
    __slots__ = FIELDS

    def __init__(self) -> None:
        self.shares: int | None = None
        self.quota: int | None = None
        self.burst: int | None = None
        self.period: int | None = None
        self.realtimeRuntime: int | None = None
        self.realtimePeriod: int | None = None
        self.cpus: str | None = None
        self.mems: str | None = None
        self.idle: int | None = None


class WeightDevice:
    __slots__ = ("leaf_weight", "major", "minor", "weight", "where")

    def __init__(
        self, major: int, minor: int, weight: int | None, leaf_weight: int | None, where: str
    ) -> None:
        self.major = major
        self.minor = minor
        self.weight = weight
        self.leaf_weight = leaf_weight
        self.where = where


class ThrottleDevice:
    __slots__ = ("major", "minor", "rate", "where")

    def __init__(self, major: int, minor: int, rate: int, where: str) -> None:
        self.major = major
        self.minor = minor
        self.rate = rate
        self.where = where


class BlockIO:
    FIELDS = (
        "weight",
        "leafWeight",
        "weightDevice",
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOPSDevice",
        "throttleWriteIOPSDevice",
    )
    __slots__ = FIELDS

    def __init__(self) -> None:
        self.weight: int | None = None
        self.leafWeight: int | None = None
        self.weightDevice: list[WeightDevice] = []
        self.throttleReadBpsDevice: list[ThrottleDevice] = []
        self.throttleWriteBpsDevice: list[ThrottleDevice] = []
        self.throttleReadIOPSDevice: list[ThrottleDevice] = []
        self.throttleWriteIOPSDevice: list[ThrottleDevice] = []


class Hugepage:
    __slots__ = ("limit", "page_size", "where")

    def __init__(self, page_size: str, limit: int, where: str) -> None:
        self.page_size = page_size
        self.limit = limit
        self.where = where


class Network:
    __slots__ = ("class_id", "priorities")

    def __init__(self, class_id: int | None = None) -> None:
        self.class_id = class_id
        self.priorities: list[tuple[str, int]] = []


class Rdma:
    __slots__ = ("device", "hca_handles", "hca_objects")

    def __init__(self, device: str, hca_handles: int | None, hca_objects: int | None) -> None:
        self.device = device
        self.hca_handles = hca_handles
        self.hca_objects = hca_objects


class Resources:
    __slots__ = (
        "block_io",
        "cpu",
        "devices",
        "hugepages",
        "memory",
        "network",
        "pids_limit",
        "rdma",
        "unified",
    )

    def __init__(self) -> None:
        self.memory: Memory | None = None
        self.cpu: Cpu | None = None
        self.pids_limit: int | None = None
        self.block_io: BlockIO | None = None
        self.hugepages: list[Hugepage] = []
        self.network: Network | None = None
        self.rdma: list[Rdma] = []
        self.unified: dict[str, str] = {}
        #: the container's full device rule list (spec, linux.devices, runc's defaults)
        self.devices: list[devices.Rule] = []


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where}: must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{where}: must be a list")
    return value


def _int(value: Any, where: str, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{where}: {value!r} is not an integer")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"{where}: {value} is below {minimum}")
    return value


def _req_int(value: Any, where: str, minimum: int | None = None) -> int:
    out = _int(value, where, minimum)
    if out is None:
        raise InvalidArgument(f"{where}: required")
    return out


def _bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidArgument(f"{where}: {value!r} is not true or false")


def _str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidArgument(f"{where}: {value!r} is not a string")


def _known(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise InvalidArgument(f"{where}.{sorted(unknown)[0]}: unknown field")


def _memory(obj: Mapping[str, Any]) -> Memory:
    w = f"{F}.memory"
    _known(obj, set(Memory.FIELDS), w)
    m = Memory()
    for name in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        setattr(m, name, _int(obj.get(name), f"{w}.{name}", -1))
    m.swappiness = _int(obj.get("swappiness"), f"{w}.swappiness", 0)
    if m.swappiness is not None and m.swappiness > 100:
        raise InvalidArgument(f"{w}.swappiness: {m.swappiness} is above 100")
    for name in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
        setattr(m, name, _bool(obj.get(name), f"{w}.{name}"))
    return m


def _cpu(obj: Mapping[str, Any]) -> Cpu:
    w = f"{F}.cpu"
    _known(obj, set(Cpu.FIELDS), w)
    c = Cpu()
    c.shares = _int(obj.get("shares"), f"{w}.shares", 0)
    c.quota = _int(obj.get("quota"), f"{w}.quota", -1)
    c.burst = _int(obj.get("burst"), f"{w}.burst", 0)
    c.period = _int(obj.get("period"), f"{w}.period", 0)
    c.realtimeRuntime = _int(obj.get("realtimeRuntime"), f"{w}.realtimeRuntime", -1)
    c.realtimePeriod = _int(obj.get("realtimePeriod"), f"{w}.realtimePeriod", 0)
    c.cpus = _str(obj.get("cpus"), f"{w}.cpus")
    c.mems = _str(obj.get("mems"), f"{w}.mems")
    c.idle = _int(obj.get("idle"), f"{w}.idle")
    return c


def _throttle(items: Any, where: str) -> list[ThrottleDevice]:
    out = []
    for i, item in enumerate(_list(items, where)):
        at = f"{where}[{i}]"
        d = _obj(item, at)
        _known(d, {"major", "minor", "rate"}, at)
        out.append(
            ThrottleDevice(
                _req_int(d.get("major"), f"{at}.major", 0),
                _req_int(d.get("minor"), f"{at}.minor", 0),
                _req_int(d.get("rate"), f"{at}.rate", 0),
                at,
            )
        )
    return out


def _block_io(obj: Mapping[str, Any]) -> BlockIO:
    w = f"{F}.blockIO"
    _known(obj, set(BlockIO.FIELDS), w)
    b = BlockIO()
    b.weight = _int(obj.get("weight"), f"{w}.weight", 0)
    b.leafWeight = _int(obj.get("leafWeight"), f"{w}.leafWeight", 0)
    for i, item in enumerate(_list(obj.get("weightDevice"), f"{w}.weightDevice")):
        at = f"{w}.weightDevice[{i}]"
        d = _obj(item, at)
        _known(d, {"major", "minor", "weight", "leafWeight"}, at)
        b.weightDevice.append(
            WeightDevice(
                _req_int(d.get("major"), f"{at}.major", 0),
                _req_int(d.get("minor"), f"{at}.minor", 0),
                _int(d.get("weight"), f"{at}.weight", 0),
                _int(d.get("leafWeight"), f"{at}.leafWeight", 0),
                at,
            )
        )
    for name in (
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOPSDevice",
        "throttleWriteIOPSDevice",
    ):
        setattr(b, name, _throttle(obj.get(name), f"{w}.{name}"))
    return b


def _network(obj: Mapping[str, Any]) -> Network:
    w = f"{F}.network"
    _known(obj, {"classID", "priorities"}, w)
    n = Network(class_id=_int(obj.get("classID"), f"{w}.classID", 0))
    for i, item in enumerate(_list(obj.get("priorities"), f"{w}.priorities")):
        at = f"{w}.priorities[{i}]"
        d = _obj(item, at)
        _known(d, {"name", "priority"}, at)
        name = _str(d.get("name"), f"{at}.name")
        if not name:
            raise InvalidArgument(f"{at}.name: required")
        n.priorities.append((name, _req_int(d.get("priority"), f"{at}.priority", 0)))
    return n


def _unified(obj: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in obj.items():
        at = f"{F}.unified[{key!r}]"
        if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
            raise InvalidArgument(f"{at}: not a cgroup file name")
        if not isinstance(value, str):
            raise InvalidArgument(f"{at}: value must be a string")
        out[key] = value
    return out


_TOP = {
    "devices",
    "memory",
    "cpu",
    "pids",
    "blockIO",
    "hugepageLimits",
    "network",
    "rdma",
    "unified",
}


def parse(
    resources: Mapping[str, Any] | None,
    linux_devices: Any = None,
    *,
    default_devices: bool = True,
) -> Resources:
    """Check and type resources; devices are the container's full rule list (see set())."""
    r = _obj(resources or {}, F)
    _known(r, _TOP, F)
    out = Resources()
    if r.get("memory") is not None:
        out.memory = _memory(_obj(r["memory"], f"{F}.memory"))
    if r.get("cpu") is not None:
        out.cpu = _cpu(_obj(r["cpu"], f"{F}.cpu"))
    if r.get("pids") is not None:
        p = _obj(r["pids"], f"{F}.pids")
        _known(p, {"limit"}, f"{F}.pids")
        out.pids_limit = _int(p.get("limit"), f"{F}.pids.limit")
    if r.get("blockIO") is not None:
        out.block_io = _block_io(_obj(r["blockIO"], f"{F}.blockIO"))
    for i, item in enumerate(_list(r.get("hugepageLimits"), f"{F}.hugepageLimits")):
        at = f"{F}.hugepageLimits[{i}]"
        d = _obj(item, at)
        _known(d, {"pageSize", "limit"}, at)
        size = convert.hugepage_size(d.get("pageSize"), f"{at}.pageSize")
        out.hugepages.append(Hugepage(size, _req_int(d.get("limit"), f"{at}.limit", 0), at))
    if r.get("network") is not None:
        out.network = _network(_obj(r["network"], f"{F}.network"))
    if r.get("rdma") is not None:
        for name, item in _obj(r["rdma"], f"{F}.rdma").items():
            at = f"{F}.rdma[{name!r}]"
            d = _obj(item, at)
            _known(d, {"hcaHandles", "hcaObjects"}, at)
            out.rdma.append(
                Rdma(
                    name,
                    _int(d.get("hcaHandles"), f"{at}.hcaHandles", 0),
                    _int(d.get("hcaObjects"), f"{at}.hcaObjects", 0),
                )
            )
    if r.get("unified") is not None:
        out.unified = _unified(_obj(r["unified"], f"{F}.unified"))
    out.devices = devices.container_rules(r.get("devices"), linux_devices, defaults=default_devices)
    return out


def requested(res: Resources) -> list[str]:
    """The limits res asks for (device rules aside), as OCI field names."""
    out: list[str] = []
    sections: tuple[tuple[Memory | Cpu | BlockIO | None, str], ...] = (
        (res.memory, "memory"),
        (res.cpu, "cpu"),
        (res.block_io, "blockIO"),
    )
    for sect, name in sections:
        if sect is None:
            continue
        for field in sect.FIELDS:
            v = getattr(sect, field)
            if v not in (None, []):
                out.append(f"{F}.{name}.{field}")
    if res.pids_limit is not None:
        out.append(f"{F}.pids.limit")
    out += [h.where for h in res.hugepages]
    if res.network is not None and (res.network.class_id is not None or res.network.priorities):
        out.append(f"{F}.network")
    if res.rdma:
        out.append(f"{F}.rdma")
    if res.unified:
        out.append(f"{F}.unified")
    return out
