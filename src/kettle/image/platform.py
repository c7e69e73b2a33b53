"""Platforms (os/arch/variant): the host's, parsing ``linux/arm64/v8``, and matching."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from kettle.errors import InvalidArgument

_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
}
_ARM_VARIANTS = ["v8", "v7", "v6", "v5"]


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)


def normalize(p: Platform) -> Platform:
    arch = _ARCH.get(p.architecture, p.architecture)
    variant = p.variant
    if arch == "arm64" and variant in ("", "8"):
        variant = "v8"
    elif arch == "arm" and variant == "":
        variant = "v7"
    elif arch == "arm" and variant.isdigit():
        variant = "v" + variant
    elif arch == "amd64" and variant == "v1":
        variant = ""
    return Platform(p.os.lower(), arch, variant)


def host_platform() -> Platform:
    machine = _platform.machine()
    if machine.startswith("armv"):
        return Platform("linux", "arm", "v" + machine[4])
    return normalize(Platform("linux", _ARCH.get(machine, machine)))


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` or ``arch``; raise InvalidArgument naming the text."""
    parts = text.split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise InvalidArgument(f"invalid platform {text!r}: expected os/arch[/variant]")
    if len(parts) == 1:
        return normalize(Platform("linux", parts[0]))
    return normalize(Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else ""))


def compatible(wanted: Platform) -> list[Platform]:
    """Platforms that can run on ``wanted``, best first (an arm v7 host also runs v6 and v5)."""
    w = normalize(wanted)
    out = [w]
    if w.architecture == "arm" and w.variant in _ARM_VARIANTS:
        out += [
            Platform(w.os, "arm", v) for v in _ARM_VARIANTS[_ARM_VARIANTS.index(w.variant) + 1 :]
        ]
    elif w.architecture == "amd64" and w.variant:
        out.append(Platform(w.os, "amd64", ""))
    return out


def rank(wanted: Platform, candidate: Platform) -> int | None:
    """Position of candidate in wanted's compatibility order, or None when it cannot run."""
    c = normalize(candidate)
    for i, p in enumerate(compatible(wanted)):
        if p == c:
            return i
    return None
