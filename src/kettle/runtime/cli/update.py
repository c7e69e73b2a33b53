"""kettle-runtime update [--resources FILE|-] [resource flags] <id>"""

from __future__ import annotations

from kettle.errors import InvalidArgument
from kettle.runtime.cli import Flag, parse
from kettle.runtime.cli._common import need_id, read_json_source
from kettle.runtime.context import Context

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# flag -> (section, key, value kind)
_RESOURCE_FLAGS: dict[str, tuple[str, str, str]] = {
    "memory": ("memory", "limit", "bytes"),
    "memory-swap": ("memory", "swap", "bytes"),
    "memory-reservation": ("memory", "reservation", "bytes"),
    "kernel-memory": ("memory", "kernel", "bytes"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "bytes"),
    "cpu-shares": ("cpu", "shares", "int"),
    "cpu-quota": ("cpu", "quota", "int"),
    "cpu-period": ("cpu", "period", "int"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "pids-limit": ("pids", "limit", "int"),
    "blkio-weight": ("blockIO", "weight", "int"),
}

FLAGS = (
    Flag(("--resources", "-r"), "resources"),
    Flag(("--l3-cache-schema",), "l3"),
    Flag(("--mem-bw-schema",), "membw"),
    *(Flag((f"--{name}",), name) for name in _RESOURCE_FLAGS),
)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str, flag: str) -> int:
    """Docker/runc sizes: 1024, 100k, 64M, 1g, 1.5GiB; -1 for unlimited."""
    raw = text.strip().lower()
    if raw == "-1":
        return -1
    for suffix in ("ib", "b"):
        if raw.endswith(suffix) and raw[: -len(suffix)][-1:].isalpha():
            raw = raw[: -len(suffix)]
            break
    unit = raw[-1] if raw and raw[-1].isalpha() else ""
    number = raw[:-1] if unit else raw
    try:
        value = float(number)
    except ValueError:
        raise InvalidArgument(f"--{flag}: invalid size {text!r}") from None
    if unit not in _UNITS:
        raise InvalidArgument(f"--{flag}: invalid size unit in {text!r}")
    return int(value * _UNITS[unit])


def build_resources(v: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if v["resources"]:
        loaded = read_json_source(v["resources"], "--resources")
        if not isinstance(loaded, dict):
            raise InvalidArgument("--resources: must hold a json object (LinuxResources)")
        out = loaded
    for name, (section, key, kind) in _RESOURCE_FLAGS.items():
        raw = v.get(name)
        if raw is None:
            continue
        if kind == "bytes":
            value: Any = parse_bytes(raw, name)
        elif kind == "int":
            try:
                value = int(raw)
            except ValueError:
                raise InvalidArgument(f"--{name}: invalid number {raw!r}") from None
        else:
            value = raw
        out.setdefault(section, {})[key] = value
    if v.get("l3") or v.get("membw"):
        raise InvalidArgument("--l3-cache-schema/--mem-bw-schema: intel rdt is not supported")
    return out


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.lifecycle import update

    p = parse(argv, FLAGS)
    cid = need_id(p.args, "update")
    update(ctx, cid, build_resources(p.values))
    return 0
