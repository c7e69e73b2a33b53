"""The OCI ``process.capabilities`` object: parsing, validation and applying it in the init.

Order in the container's init (as in runc): :func:`drop_bounding` while still root, then the
caller sets PR_SET_KEEPCAPS, switches uid/gid and clears KEEPCAPS, then :func:`apply` sets the
effective, permitted and inheritable sets and raises the ambient ones.  A spec without a
capabilities object gets none at all, as with runc.
"""

from __future__ import annotations

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Iterable, Mapping

from kettle import syscalls as sc
from kettle.errors import InvalidArgument, SyscallError

# Not typing.TYPE_CHECKING: importing typing costs milliseconds at every runtime start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

FIELD: Final = "process.capabilities"

#: linux/capability.h, up to Linux 5.9's CAP_CHECKPOINT_RESTORE.
CAPS: Final[dict[str, int]] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
_NAMES: Final[dict[int, str]] = {v: k for k, v in CAPS.items()}

#: The sets of the spec's capabilities object.
SETS: Final = ("bounding", "effective", "inheritable", "permitted", "ambient")
_STATUS_KEYS: Final[dict[str, str]] = {
    "CapInh": "inheritable",
    "CapPrm": "permitted",
    "CapEff": "effective",
    "CapBnd": "bounding",
    "CapAmb": "ambient",
}

_last_cap: int | None = None


def _probe_last_cap() -> int:
    # /proc may be missing (or be the container's, not yet mounted) in the init: ask the
    # kernel directly, PR_CAPBSET_READ answers EINVAL past the last capability.
    cap = 0
    while cap < 63:
        try:
            sc.prctl(sc.PR_CAPBSET_READ, cap + 1)
        except SyscallError:
            return cap
        cap += 1
    return cap


def last_cap() -> int:
    """The highest capability number this kernel knows (cached)."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as fh:
                _last_cap = int(fh.read())
        except (OSError, ValueError):
            _last_cap = _probe_last_cap()
    return _last_cap


def parse_caps(names: Iterable[str], field: str) -> int:
    """The mask for capability names.

    A name Kettle does not know is an error.  A name it knows but this kernel does not (above
    cap_last_cap, e.g. CAP_BPF before Linux 5.8) is skipped: spec generators emit the newest
    default sets, the kernel could never grant that capability anyway, and the process ends
    up with exactly the privileges the kernel can express (runc skips these too).
    """
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise InvalidArgument(f"{field}: must be a list of capability names")
    top = last_cap()
    mask = 0
    for name in names:
        if not isinstance(name, str):
            raise InvalidArgument(f"{field}: {name!r} is not a capability name")
        cap = CAPS.get(name)
        if cap is None:
            raise InvalidArgument(f"{field}: unknown capability {name}")
        if cap <= top:
            mask |= 1 << cap
    return mask


def names(mask: int) -> list[str]:
    """Capability names in mask, lowest first (unknown bits as CAP_<n>)."""
    out: list[str] = []
    bit = 0
    while mask >> bit:
        if (mask >> bit) & 1:
            out.append(_NAMES.get(bit, f"CAP_{bit}"))
        bit += 1
    return out


def masks(capabilities: Mapping[str, Any] | None) -> dict[str, int]:
    """Every set of a spec's capabilities object as a mask (all 0 for None)."""
    if capabilities is None:
        return dict.fromkeys(SETS, 0)
    if not isinstance(capabilities, Mapping):
        raise InvalidArgument(f"{FIELD}: must be an object")
    for key in capabilities:
        if key not in SETS:
            raise InvalidArgument(f"{FIELD}: unknown set {key!r}")
    out: dict[str, int] = {}
    for key in SETS:
        value = capabilities.get(key)
        out[key] = 0 if value is None else parse_caps(value, f"{FIELD}.{key}")
    return out


def validate(capabilities: Mapping[str, Any] | None) -> None:
    """Check names, and what capset would refuse later (an effective capability that is not
    permitted: runc fails there with EPERM; here it fails at create, naming the set)."""
    m = masks(capabilities)
    extra = m["effective"] & ~m["permitted"]
    if extra:
        raise InvalidArgument(
            f"{FIELD}.effective: {', '.join(names(extra))} not in permitted"
            " (the kernel refuses an effective capability that is not permitted)"
        )


def ineffective_ambient(capabilities: Mapping[str, Any] | None) -> list[str]:
    """Ambient capabilities of the spec that apply() leaves out because they are not both
    permitted and inheritable (for a warning: see apply)."""
    m = masks(capabilities)
    return names(m["ambient"] & ~(m["permitted"] & m["inheritable"]))


def drop_bounding(capabilities: Mapping[str, Any] | None) -> None:
    """Drop from the bounding set every capability the spec's bounding set lacks.

    Runs while the init still has CAP_SETPCAP (before the uid switch).  A capability that is
    already out of the bounding set is not dropped again, so a runtime that lacks CAP_SETPCAP
    still succeeds when there is nothing left to drop.
    """
    keep = masks(capabilities)["bounding"]
    for cap in range(last_cap() + 1):
        if keep >> cap & 1:
            continue
        if not sc.prctl(sc.PR_CAPBSET_READ, cap):
            continue
        try:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
        except SyscallError as exc:
            raise SyscallError(
                "prctl(PR_CAPBSET_DROP)",
                exc.errno,
                detail=f"{FIELD}.bounding: dropping {_NAMES.get(cap, cap)}"
                + (" needs CAP_SETPCAP" if exc.errno == 1 else ""),
            ) from None


def apply(capabilities: Mapping[str, Any] | None) -> None:
    """Set effective, permitted and inheritable, then the ambient set.

    Called after the uid/gid switch (done with PR_SET_KEEPCAPS so that permitted survives; the
    switch itself empties effective).  Ambient capabilities must be in permitted and
    inheritable, hence capset first.
    """
    m = masks(capabilities)
    # The kernel raises an ambient capability only if it is permitted and inheritable, and
    # drops it again whenever either loses it.  `runc spec` (and Kettle's `spec`) writes an
    # ambient set but, since runc 1.1.2 (CVE-2022-29162), no inheritable one: runc goes on
    # without those ambient capabilities, and so does Kettle, or the default spec would not
    # run.  ineffective_ambient() names them for a warning.
    ambient = m["ambient"] & m["permitted"] & m["inheritable"]
    try:
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    except SyscallError as exc:
        # EINVAL: a kernel before 4.3 has no ambient set, so there is nothing to clear; it
        # matters only if there is one to raise (below).
        if exc.errno != 22 or ambient:
            raise SyscallError(
                "prctl(PR_CAP_AMBIENT_CLEAR_ALL)", exc.errno, detail=f"{FIELD}.ambient"
            ) from None
    try:
        sc.capset(m["effective"], m["permitted"], m["inheritable"])
    except SyscallError as exc:
        raise SyscallError(
            "capset",
            exc.errno,
            detail=f"{FIELD}: effective {m['effective']:#x} permitted {m['permitted']:#x}"
            f" inheritable {m['inheritable']:#x}",
        ) from None
    for cap in range(last_cap() + 1):
        if ambient >> cap & 1:
            try:
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
            except SyscallError as exc:
                raise SyscallError(
                    "prctl(PR_CAP_AMBIENT_RAISE)",
                    exc.errno,
                    detail=f"{FIELD}.ambient: {_NAMES.get(cap, cap)}",
                ) from None


def status_masks(pid: int | str = "self") -> dict[str, int]:
    """The capability sets of a process from /proc/<pid>/status, keyed like the spec."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            name = _STATUS_KEYS.get(key)
            if name is not None:
                out[name] = int(value.strip(), 16)
    return out


def current_names(pid: int | str = "self") -> dict[str, list[str]]:
    """The capability sets of a process as names (for debugging and tests)."""
    return {key: names(mask) for key, mask in status_masks(pid).items()}
