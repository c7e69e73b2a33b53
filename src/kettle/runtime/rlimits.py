"""The OCI ``process.rlimits`` list: validation and setrlimit in the container's init."""

from __future__ import annotations

import os
import resource

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping

from kettle import syscalls as sc
from kettle.errors import FailedPrecondition, InvalidArgument, SyscallError

# Not typing.TYPE_CHECKING, and Rlimit is a plain class rather than a NamedTuple: typing costs
# milliseconds to import and a NamedTuple class about a millisecond to create, at every start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

FIELD: Final = "process.rlimits"

RLIMITS: Final[dict[str, int]] = {
    "RLIMIT_AS": resource.RLIMIT_AS,
    "RLIMIT_CORE": resource.RLIMIT_CORE,
    "RLIMIT_CPU": resource.RLIMIT_CPU,
    "RLIMIT_DATA": resource.RLIMIT_DATA,
    "RLIMIT_FSIZE": resource.RLIMIT_FSIZE,
    # Python's resource module has no RLIMIT_LOCKS; 10 is asm-generic's value (x86, arm,
    # arm64, ppc, s390, riscv); the archs that renumber rlimits (mips, sparc, alpha) keep it.
    "RLIMIT_LOCKS": getattr(resource, "RLIMIT_LOCKS", 10),
    "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK,
    "RLIMIT_MSGQUEUE": resource.RLIMIT_MSGQUEUE,
    "RLIMIT_NICE": resource.RLIMIT_NICE,
    "RLIMIT_NOFILE": resource.RLIMIT_NOFILE,
    "RLIMIT_NPROC": resource.RLIMIT_NPROC,
    "RLIMIT_RSS": resource.RLIMIT_RSS,
    "RLIMIT_RTPRIO": resource.RLIMIT_RTPRIO,
    "RLIMIT_RTTIME": resource.RLIMIT_RTTIME,
    "RLIMIT_SIGPENDING": resource.RLIMIT_SIGPENDING,
    "RLIMIT_STACK": resource.RLIMIT_STACK,
}

#: RLIM_INFINITY as the spec writes it (uint64 all ones); Python's resource module says -1.
UNLIMITED: Final = (1 << 64) - 1
_MAX_FINITE: Final = (1 << 63) - 1  # the largest value resource.prlimit can pass
_CAP_SYS_RESOURCE: Final = 24


class Rlimit:
    """One checked entry of process.rlimits (treated as immutable)."""

    __slots__ = ("field", "hard", "resource", "soft", "type")

    def __init__(self, field: str, type: str, resource: int, soft: int, hard: int) -> None:
        self.field = field  # "process.rlimits[2]"
        self.type = type
        self.resource = resource
        self.soft = soft  # as in the spec: UNLIMITED for no limit
        self.hard = hard

    def _key(self) -> tuple[str, str, int, int, int]:
        return (self.field, self.type, self.resource, self.soft, self.hard)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rlimit) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Rlimit(field={self.field!r}, type={self.type!r}, resource={self.resource!r}, "
            f"soft={self.soft!r}, hard={self.hard!r})"
        )


def _value(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field}: must be an unsigned integer, not {type(value).__name__}")
    if value < 0 or value > UNLIMITED:
        raise InvalidArgument(f"{field}: {value} is out of range 0..{UNLIMITED}")
    if _MAX_FINITE < value < UNLIMITED:
        # The kernel would take it, but as a limit it is the same as none; say so rather than
        # guess which one was meant.
        raise InvalidArgument(f"{field}: {value} is too large; {UNLIMITED} means unlimited")
    return value


def parse(rlimits: Sequence[Mapping[str, Any]] | None) -> list[Rlimit]:
    """The spec's rlimits, checked for shape, names, soft <= hard and duplicates."""
    if rlimits is None:
        return []
    if not isinstance(rlimits, list | tuple):
        raise InvalidArgument(f"{FIELD}: must be a list")
    out: list[Rlimit] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(rlimits):
        field = f"{FIELD}[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidArgument(f"{field}: must be an object")
        for key in entry:
            if key not in ("type", "soft", "hard"):
                raise InvalidArgument(f"{field}: unknown field {key!r}")
        for key in ("type", "soft", "hard"):
            if key not in entry:
                raise InvalidArgument(f"{field}.{key}: missing")
        name = entry["type"]
        if not isinstance(name, str) or name not in RLIMITS:
            raise InvalidArgument(f"{field}.type: unknown rlimit {name}")
        if name in seen:
            raise InvalidArgument(f"{field}.type: {name} is already set by {seen[name]}")
        seen[name] = field
        soft = _value(entry["soft"], f"{field}.soft")
        hard = _value(entry["hard"], f"{field}.hard")
        if soft > hard:
            raise InvalidArgument(
                f"{field}: {name} soft limit {_show(soft)} is above its hard limit {_show(hard)}"
            )
        out.append(Rlimit(field, name, RLIMITS[name], soft, hard))
    return out


def _show(value: int) -> str:
    return "unlimited" if value == UNLIMITED else str(value)


def _from_os(value: int) -> int:
    return UNLIMITED if value == resource.RLIM_INFINITY else value


def _to_os(value: int) -> int:
    return resource.RLIM_INFINITY if value == UNLIMITED else value


def can_raise_hard_limits() -> bool:
    """Whether this process may raise a hard limit: CAP_SYS_RESOURCE in the initial user
    namespace (the kernel checks it there, so in a user namespace of our own, as a rootless
    runtime is, holding the capability is not enough)."""
    effective, _, _ = sc.capget()
    if not effective >> _CAP_SYS_RESOURCE & 1:
        return False
    try:
        with open("/proc/self/uid_map", encoding="ascii") as fh:
            # The initial namespace maps every uid onto itself in one line.
            return fh.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def _nr_open() -> int | None:
    try:
        fd = os.open("/proc/sys/fs/nr_open", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(os.read(fd, 64))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None


def validate(rlimits: Sequence[Mapping[str, Any]] | None) -> None:
    """Check the spec's rlimits, and that this process could set them (the init inherits our
    limits and privileges)."""
    parsed = parse(rlimits)
    if not parsed:
        return
    privileged: bool | None = None
    for rl in parsed:
        _, current_hard = resource.getrlimit(rl.resource)
        have = _from_os(current_hard)
        if rl.hard > have:
            if privileged is None:
                privileged = can_raise_hard_limits()
            if not privileged:
                raise FailedPrecondition(
                    f"{rl.field}: {rl.type} hard limit {_show(rl.hard)} is above the current"
                    f" hard limit {_show(have)}, and raising a hard limit needs CAP_SYS_RESOURCE,"
                    " which this runtime lacks"
                )
        if rl.type == "RLIMIT_NOFILE":
            # Even CAP_SYS_RESOURCE cannot set nofile above fs.nr_open (setrlimit: EPERM).
            nr_open = _nr_open()
            if nr_open is not None and rl.hard > nr_open:
                raise FailedPrecondition(
                    f"{rl.field}: RLIMIT_NOFILE hard limit {_show(rl.hard)} is above"
                    f" fs.nr_open ({nr_open})"
                )


def apply(rlimits: Sequence[Mapping[str, Any]] | None) -> None:
    """setrlimit every rlimit of the spec on the calling process."""
    for rl in parse(rlimits):
        limits = (_to_os(rl.soft), _to_os(rl.hard))
        try:
            resource.prlimit(0, rl.resource, limits)
        except ValueError:
            # resource.prlimit turns EINVAL into ValueError; parse() ruled out soft > hard, so
            # it is the kernel refusing the value itself.
            raise SyscallError(
                "setrlimit", 22, detail=f"{rl.field}: {rl.type} {_limits(rl)}"
            ) from None
        except OSError as exc:
            hint = " (raising a hard limit needs CAP_SYS_RESOURCE)" if exc.errno == 1 else ""
            raise SyscallError(
                "setrlimit", exc.errno or 0, detail=f"{rl.field}: {rl.type} {_limits(rl)}{hint}"
            ) from None


def _limits(rl: Rlimit) -> str:
    return f"soft {_show(rl.soft)} hard {_show(rl.hard)}"
