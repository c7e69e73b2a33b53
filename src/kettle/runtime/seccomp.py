"""The OCI ``linux.seccomp`` object: validation, translation to libseccomp rules, and loading.

The translation (:func:`plan`) is a pure function from the spec object to a :class:`Plan` (default
action, architectures, flags, and a flat list of rules); :func:`validate` also builds the filter
in memory with the real libseccomp (without loading it) so that what the library or the kernel
cannot do fails at ``create`` time, in the parent, naming the spec field.  :func:`load` runs in
the container's init right before execve.

libseccomp is only loaded when a seccomp object is present (``kettle.syscalls.seccomp`` is
imported inside the functions that need it): most containers never pay for it.
"""

from __future__ import annotations

import os

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping

from kettle.errors import InvalidArgument, SyscallError, Unimplemented

# Not typing.TYPE_CHECKING: importing typing costs milliseconds, and nearly every container
# (Docker's and Podman's default profiles) comes with a seccomp object.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any, Final

    from kettle.syscalls.seccomp import Filter

FIELD: Final = "linux.seccomp"

# Action values of seccomp.h, repeated here (not imported) so that the translation and the
# validation of a spec's shape need no libseccomp.  ERRNO and TRACE carry 16 bits of data.
_ACT_KILL_THREAD: Final = 0x00000000
_ACT_KILL_PROCESS: Final = 0x80000000
_ACT_TRAP: Final = 0x00030000
_ACT_ERRNO: Final = 0x00050000
_ACT_NOTIFY: Final = 0x7FC00000
_ACT_TRACE: Final = 0x7FF00000
_ACT_LOG: Final = 0x7FFC0000
_ACT_ALLOW: Final = 0x7FFF0000

_ACTIONS: Final[dict[str, int]] = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS,
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_TRAP": _ACT_TRAP,
    "SCMP_ACT_ERRNO": _ACT_ERRNO,
    "SCMP_ACT_TRACE": _ACT_TRACE,
    "SCMP_ACT_ALLOW": _ACT_ALLOW,
    "SCMP_ACT_LOG": _ACT_LOG,
    "SCMP_ACT_NOTIFY": _ACT_NOTIFY,
}
SUPPORTED_ACTIONS: Final[list[str]] = list(_ACTIONS)

# enum scmp_compare
_OPERATORS: Final[dict[str, int]] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
SUPPORTED_OPERATORS: Final[list[str]] = list(_OPERATORS)

#: OCI architecture name -> libseccomp's name for it.  Whether the installed libseccomp knows
#: one is asked at run time (supported_archs): loongarch64, m68k and sh arrived in 2.6.
_ARCHES: Final[dict[str, str]] = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}

#: OCI filter flag -> (libseccomp attribute, lowest libseccomp version, lowest API level).
#: The API level (seccomp_api_get) folds in what the running kernel can do.
_FLAGS: Final[dict[str, tuple[int, tuple[int, int, int], int]]] = {
    "SECCOMP_FILTER_FLAG_TSYNC": (4, (2, 2, 0), 2),
    "SECCOMP_FILTER_FLAG_LOG": (6, (2, 4, 0), 3),
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": (7, (2, 5, 0), 4),
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": (10, (2, 6, 0), 7),
}

#: Lowest API level for an action (KILL_PROCESS and LOG need kernel 4.14, NOTIFY 5.0).
_ACTION_API: Final[dict[int, tuple[str, int]]] = {
    _ACT_KILL_PROCESS: ("SCMP_ACT_KILL_PROCESS", 3),
    _ACT_LOG: ("SCMP_ACT_LOG", 3),
    _ACT_NOTIFY: ("SCMP_ACT_NOTIFY", 5),
}

#: Syscalls that must not be sent to the listener: the init makes them after the filter is in
#: but before the listener has the notify fd, so nobody could answer and the init would hang.
#: (runc refuses write for the same reason; it sends the fd with write on its sync pipe.)
_NOTIFY_RESERVED: Final = frozenset({"write", "sendmsg"})

_SECCOMP_KEYS: Final = frozenset(
    {
        "defaultAction",
        "defaultErrnoRet",
        "architectures",
        "flags",
        "listenerPath",
        "listenerMetadata",
        "syscalls",
    }
)
_SYSCALL_KEYS: Final = frozenset({"names", "action", "errnoRet", "args"})
_ARG_KEYS: Final = frozenset({"index", "value", "valueTwo", "op"})

_ERRNO_MAX: Final = 4095  # the kernel clamps a larger SECCOMP_RET_ERRNO data to this
_DATA_MAX: Final = 0xFFFF
_U64_MAX: Final = (1 << 64) - 1
_SUN_PATH_MAX: Final = 107  # sizeof(sun_path) - 1 for the terminating NUL


# Plain classes: a dataclass costs ~15 ms to import, a NamedTuple (typing) several ms more.
class Rule:
    """One seccomp_rule_add_array call: field names the spec entry it came from."""

    __slots__ = ("action", "args", "field", "syscall")

    def __init__(
        self,
        field: str,
        syscall: str,
        action: int,
        args: tuple[tuple[int, int, int, int], ...],  # (arg index, op, datum_a, datum_b)
    ) -> None:
        self.field = field
        self.syscall = syscall
        self.action = action
        self.args = args

    def _key(self) -> tuple[str, str, int, tuple[tuple[int, int, int, int], ...]]:
        return (self.field, self.syscall, self.action, self.args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Rule(field={self.field!r}, syscall={self.syscall!r}, action={self.action!r}, "
            f"args={self.args!r})"
        )


class Plan:
    """A linux.seccomp object, translated and checked (see plan())."""

    __slots__ = (
        "architectures",
        "default_action",
        "flags",
        "listener_metadata",
        "listener_path",
        "notify",
        "rules",
    )

    def __init__(
        self,
        default_action: int,
        architectures: tuple[tuple[str, str], ...],  # (spec field, libseccomp arch name)
        flags: tuple[tuple[str, str], ...],  # (spec field, OCI flag name)
        rules: tuple[Rule, ...],
        notify: bool,
        listener_path: str,
        listener_metadata: str,
    ) -> None:
        self.default_action = default_action
        self.architectures = architectures
        self.flags = flags
        self.rules = rules
        self.notify = notify
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata

    def _key(
        self,
    ) -> tuple[
        int,
        tuple[tuple[str, str], ...],
        tuple[tuple[str, str], ...],
        tuple[Rule, ...],
        bool,
        str,
        str,
    ]:
        return (
            self.default_action,
            self.architectures,
            self.flags,
            self.rules,
            self.notify,
            self.listener_path,
            self.listener_metadata,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Plan(default_action={self.default_action!r}, "
            f"architectures={self.architectures!r}, flags={self.flags!r}, "
            f"rules={self.rules!r}, notify={self.notify!r}, "
            f"listener_path={self.listener_path!r}, "
            f"listener_metadata={self.listener_metadata!r})"
        )


# --- pure translation -------------------------------------------------------------------------


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{field}: must be a list, not {type(value).__name__}")
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: must be a string, not {type(value).__name__}")
    return value


def _uint(value: Any, field: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field}: must be an unsigned integer, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise InvalidArgument(f"{field}: {value} is out of range 0..{maximum}")
    return value


def _known_keys(obj: Mapping[str, Any], allowed: frozenset[str], field: str) -> None:
    # An unknown key may be a newer spec's security setting: refuse it rather than run the
    # container with less confinement than its author asked for.
    for key in obj:
        if key not in allowed:
            raise InvalidArgument(f"{field}: unknown field {key!r}")


def action_value(name: Any, errno_ret: Any, field: str, errno_field: str) -> int:
    """The libseccomp action for an OCI action name and its optional errnoRet."""
    name = _str(name, field)
    base = _ACTIONS.get(name)
    if base is None:
        raise InvalidArgument(f"{field}: unknown action {name}")
    if base == _ACT_ERRNO:
        # runc's default errno for SCMP_ACT_ERRNO and SCMP_ACT_TRACE is EPERM.
        value = 1 if errno_ret is None else _uint(errno_ret, errno_field, _ERRNO_MAX)
        return base | value
    if base == _ACT_TRACE:
        value = 1 if errno_ret is None else _uint(errno_ret, errno_field, _DATA_MAX)
        return base | value
    if errno_ret is not None:
        raise InvalidArgument(f"{errno_field}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take one")
    return base


def _arg(arg: Any, field: str) -> tuple[int, int, int, int]:
    if not isinstance(arg, Mapping):
        raise InvalidArgument(f"{field}: must be an object")
    _known_keys(arg, _ARG_KEYS, field)
    if "index" not in arg:
        raise InvalidArgument(f"{field}.index: missing")
    index = _uint(arg["index"], f"{field}.index", 5)
    if "op" not in arg:
        raise InvalidArgument(f"{field}.op: missing")
    op_name = _str(arg["op"], f"{field}.op")
    op = _OPERATORS.get(op_name)
    if op is None:
        raise InvalidArgument(f"{field}.op: unknown operator {op_name}")
    # A missing value is 0, as in runc (Go's zero value): the spec says required, but
    # profiles in the wild rely on it for "arg == 0".
    value = _uint(arg.get("value", 0), f"{field}.value", _U64_MAX)
    value_two = _uint(arg.get("valueTwo", 0), f"{field}.valueTwo", _U64_MAX)
    # For SCMP_CMP_MASKED_EQ, value is the mask and valueTwo the expected result, which is
    # libseccomp's datum_a / datum_b order.
    return (index, op, value, value_two)


def _syscall_rules(entry: Any, field: str, default_action: int) -> tuple[list[Rule], bool]:
    if not isinstance(entry, Mapping):
        raise InvalidArgument(f"{field}: must be an object")
    _known_keys(entry, _SYSCALL_KEYS, field)
    if "action" not in entry:
        raise InvalidArgument(f"{field}.action: missing")
    action = action_value(
        entry["action"], entry.get("errnoRet"), f"{field}.action", f"{field}.errnoRet"
    )
    names = _list(entry.get("names"), f"{field}.names")
    if not names:
        raise InvalidArgument(f"{field}.names: must name at least one syscall")
    raw_args = _list(entry.get("args"), f"{field}.args")
    cmps = [_arg(a, f"{field}.args[{i}]") for i, a in enumerate(raw_args)]
    notify = action == _ACT_NOTIFY
    per_index: dict[int, int] = {}
    for cmp in cmps:
        per_index[cmp[0]] = per_index.get(cmp[0], 0) + 1
    # Two conditions on one argument: like runc, each condition becomes a rule of its own, so
    # the entry matches when ANY of them holds (older libseccomp refused such a rule, and
    # Docker's profiles are written for runc's reading).  Otherwise the conditions are ANDed.
    split = any(n > 1 for n in per_index.values())
    groups: list[tuple[tuple[int, int, int, int], ...]] = (
        [(c,) for c in cmps] if split else [tuple(cmps)]
    )
    rules: list[Rule] = []
    for j, name in enumerate(names):
        name_field = f"{field}.names[{j}]"
        name = _str(name, name_field)
        if not name:
            raise InvalidArgument(f"{name_field}: empty syscall name")
        if notify and name in _NOTIFY_RESERVED:
            raise InvalidArgument(
                f"{name_field}: SCMP_ACT_NOTIFY cannot be used for {name}: the runtime needs it"
                " to hand the notify fd to the listener"
            )
        if action == default_action:
            # libseccomp refuses (EACCES) a rule that repeats the default action; runc drops
            # it too, and it changes nothing.
            continue
        for group in groups:
            rules.append(Rule(name_field, name, action, group))
    return rules, notify


def plan(seccomp: Mapping[str, Any]) -> Plan:
    """Translate and check a spec's linux.seccomp object; no libseccomp needed."""
    if not isinstance(seccomp, Mapping):
        raise InvalidArgument(f"{FIELD}: must be an object")
    _known_keys(seccomp, _SECCOMP_KEYS, FIELD)
    if "defaultAction" not in seccomp:
        raise InvalidArgument(f"{FIELD}.defaultAction: missing")
    default = action_value(
        seccomp["defaultAction"],
        seccomp.get("defaultErrnoRet"),
        f"{FIELD}.defaultAction",
        f"{FIELD}.defaultErrnoRet",
    )
    if default == _ACT_NOTIFY:
        # Every syscall the init makes after loading would wait for a listener that does not
        # have the fd yet (runc refuses this too).
        raise InvalidArgument(f"{FIELD}.defaultAction: SCMP_ACT_NOTIFY cannot be the default")

    arches: list[tuple[str, str]] = []
    for i, arch in enumerate(_list(seccomp.get("architectures"), f"{FIELD}.architectures")):
        field = f"{FIELD}.architectures[{i}]"
        name = _ARCHES.get(_str(arch, field))
        if name is None:
            raise InvalidArgument(f"{field}: unknown architecture {arch}")
        arches.append((field, name))

    flags: list[tuple[str, str]] = []
    for i, flag in enumerate(_list(seccomp.get("flags"), f"{FIELD}.flags")):
        field = f"{FIELD}.flags[{i}]"
        if _str(flag, field) not in _FLAGS:
            raise InvalidArgument(f"{field}: unknown or unsupported flag {flag}")
        flags.append((field, flag))

    rules: list[Rule] = []
    notify = False
    for i, entry in enumerate(_list(seccomp.get("syscalls"), f"{FIELD}.syscalls")):
        entry_rules, entry_notify = _syscall_rules(entry, f"{FIELD}.syscalls[{i}]", default)
        rules.extend(entry_rules)
        notify = notify or entry_notify

    listener_path = _str(seccomp.get("listenerPath", ""), f"{FIELD}.listenerPath")
    metadata = _str(seccomp.get("listenerMetadata", ""), f"{FIELD}.listenerMetadata")
    if listener_path:
        if not listener_path.startswith("/"):
            raise InvalidArgument(f"{FIELD}.listenerPath: {listener_path} is not absolute")
        if len(os.fsencode(listener_path)) > _SUN_PATH_MAX:
            raise InvalidArgument(
                f"{FIELD}.listenerPath: {listener_path} is longer than a unix socket path may be"
                f" ({_SUN_PATH_MAX} bytes)"
            )
    if notify and not listener_path:
        raise InvalidArgument(f"{FIELD}.listenerPath: required when SCMP_ACT_NOTIFY is used")
    if metadata and not listener_path:
        raise InvalidArgument(f"{FIELD}.listenerMetadata: set without listenerPath")
    return Plan(
        default_action=default,
        architectures=tuple(arches),
        flags=tuple(flags),
        rules=tuple(rules),
        notify=notify,
        listener_path=listener_path,
        listener_metadata=metadata,
    )


# --- libseccomp ---------------------------------------------------------------------------------


def libseccomp_version() -> str:
    from kettle.syscalls import seccomp as scmp

    return ".".join(str(n) for n in scmp.version())


def supported_archs() -> list[str]:
    """The OCI architecture names that the installed libseccomp knows."""
    from kettle.syscalls import seccomp as scmp

    return [oci for oci, name in _ARCHES.items() if scmp.arch_resolve_name(name) != 0]


def _version_text(v: tuple[int, int, int]) -> str:
    return ".".join(str(n) for n in v)


def _skeleton(p: Plan) -> Filter:
    """A filter with p's default action, architectures and flags, but no rules yet."""
    from kettle.syscalls import seccomp as scmp

    version = scmp.version()
    api = scmp.api_level()
    actions = {r.action for r in p.rules}
    actions.add(p.default_action)
    for action, (name, level) in _ACTION_API.items():
        if action in actions and api < level:
            raise Unimplemented(
                f"{FIELD}: {name} needs a newer kernel or libseccomp (api level {api} < {level})"
            )
    try:
        f = scmp.Filter(p.default_action)
    except SyscallError as exc:
        raise InvalidArgument(f"{FIELD}.defaultAction: libseccomp refuses it ({exc})") from None
    try:
        # The runtime sets no_new_privs itself (process.noNewPrivileges); without it the load
        # needs CAP_SYS_ADMIN, which is why the init loads before dropping capabilities then.
        f.attr_set(scmp.FLTATR_CTL_NNP, 0)
        if version >= (2, 5, 0):
            # Kernel errnos instead of libseccomp's -ECANCELED from seccomp_load: an EACCES
            # or EINVAL there then says what went wrong.
            f.attr_set(scmp.FLTATR_API_SYSRAWRC, 1)
        for field, name in p.architectures:
            token = scmp.arch_resolve_name(name)
            if token == 0:
                raise Unimplemented(
                    f"{field}: libseccomp {_version_text(version)} does not know {name}"
                )
            try:
                f.arch_add(token)
            except SyscallError as exc:
                if exc.errno == 33:  # EDOM: libseccomp cannot mix byte orders in one filter
                    raise InvalidArgument(
                        f"{field}: {name} cannot share a filter with the other architectures"
                        " (different byte order)"
                    ) from None
                raise
        for field, flag in p.flags:
            attr, min_version, level = _FLAGS[flag]
            if flag == "SECCOMP_FILTER_FLAG_TSYNC" and p.notify and api < 6:
                # Kernels before 5.7 refuse TSYNC together with a listener.  The init is
                # single-threaded, so TSYNC has no thread to synchronise: leaving it out
                # changes nothing (runc does the same).
                continue
            if version < min_version:
                raise Unimplemented(
                    f"{field}: {flag} needs libseccomp {_version_text(min_version)} or later"
                    f" (this machine has {_version_text(version)})"
                )
            if api < level:
                raise Unimplemented(
                    f"{field}: {flag} is not supported by this kernel (seccomp api level {api},"
                    f" needs {level})"
                )
            try:
                f.attr_set(attr, 1)
            except SyscallError as exc:
                raise Unimplemented(f"{field}: libseccomp refuses {flag} ({exc})") from None
    except BaseException:
        f.release()
        raise
    return f


def _add_rules(f: Filter, p: Plan) -> tuple[list[str], bool]:
    """Add p's rules to f; returns the syscall names libseccomp does not know (skipped), and
    whether a SCMP_ACT_NOTIFY rule went in."""
    from kettle.syscalls import seccomp as scmp

    unknown: list[str] = []
    notify = False
    for rule in p.rules:
        nr = scmp.syscall_resolve_name(rule.syscall)
        if nr == scmp.NR_SCMP_ERROR:
            # Like runc: a profile names syscalls of every architecture and kernel version
            # (Docker's lists arm_fadvise64_64, for instance); one that libseccomp does not
            # know cannot be called here, so there is nothing to filter.
            unknown.append(rule.syscall)
            continue
        # A negative nr is a syscall this architecture lacks but another one in the filter
        # may have; libseccomp adds it only where it exists.
        try:
            f.rule_add(rule.action, nr, rule.args)
        except SyscallError as exc:
            raise InvalidArgument(
                f"{rule.field}: libseccomp refuses the rule for {rule.syscall} ({exc})"
            ) from None
        notify = notify or rule.action == _ACT_NOTIFY
    return unknown, notify


def _build(p: Plan) -> tuple[Filter, bool]:
    """The whole filter, and whether it has a listener (a SCMP_ACT_NOTIFY rule went in)."""
    f = _skeleton(p)
    try:
        _, notify = _add_rules(f, p)
    except BaseException:
        f.release()
        raise
    return f, notify


def validate(seccomp: Mapping[str, Any] | None, *, rules: bool = False) -> None:
    """Check linux.seccomp: its shape and values, then what this libseccomp and kernel support
    (actions, architectures, flags) on a filter built in memory, never loaded.

    Adding the rules themselves costs about 6 ms for Docker's profile on three architectures
    and catches little more (plan() has already checked every value libseccomp looks at), so
    it happens only with rules=True; load() adds them in any case.
    """
    if seccomp is None:
        return
    p = plan(seccomp)
    f = _build(p)[0] if rules else _skeleton(p)
    f.release()


def unknown_syscalls(seccomp: Mapping[str, Any]) -> list[str]:
    """Names in the profile that libseccomp does not know (and load() skips), for logging."""
    from kettle.syscalls import seccomp as scmp

    p = plan(seccomp)
    seen = dict.fromkeys(r.syscall for r in p.rules)
    return [n for n in seen if scmp.syscall_resolve_name(n) == scmp.NR_SCMP_ERROR]


def container_process_state(
    *,
    pid: int,
    state: Mapping[str, Any],
    metadata: str = "",
    oci_version: str = "1.0.2",
) -> bytes:
    """The JSON that goes to listenerPath with the notify fd (OCI "containerProcessState")."""
    # jsonio, not json: this may run after pivot_root, where only preloaded modules import.
    from kettle.runtime import jsonio as json

    return json.dumps(
        {
            "ociVersion": oci_version,
            "fds": ["seccompFd"],
            "pid": pid,
            "metadata": metadata,
            "state": dict(state),
        },
        separators=(",", ":"),
    ).encode()


def connect_listener(listener_path: str) -> socket.socket:
    """A stream socket connected to the seccomp agent at listener_path.

    The init can connect before pivot_root (the path is a host path) and pass the socket to
    load(); the connect also happens before the filter exists, so it cannot be filtered.
    """
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(listener_path)
    except OSError as exc:
        sock.close()
        raise SyscallError(
            "connect", exc.errno or 0, listener_path, f"{FIELD}.listenerPath"
        ) from None
    return sock


def _send(sock: socket.socket, fd: int, state_json: bytes, listener_path: str) -> None:
    import socket as socket_mod

    try:
        sent = socket_mod.send_fds(sock, [state_json], [fd])
    except OSError as exc:
        raise SyscallError(
            "sendmsg", exc.errno or 0, listener_path, f"{FIELD}.listenerPath"
        ) from None
    if sent < len(state_json):
        # The agent reads one message; the fd rode with the first bytes, the rest follows.
        try:
            sock.sendall(state_json[sent:])
        except OSError as exc:
            raise SyscallError(
                "send", exc.errno or 0, listener_path, f"{FIELD}.listenerPath"
            ) from None


def send_notify_fd(listener_path: str, fd: int, state_json: bytes) -> None:
    """Send the notify fd and the container process state to the agent at listener_path,
    as runc does: one message on a unix stream socket, the fd in SCM_RIGHTS."""
    sock = connect_listener(listener_path)
    try:
        _send(sock, fd, state_json, listener_path)
    finally:
        sock.close()


def load(
    seccomp: Mapping[str, Any] | None,
    *,
    listener_state: bytes | None = None,
    listener: socket.socket | None = None,
) -> int | None:
    """Build the filter and load it into the calling process.

    Returns the notify fd when the profile uses SCMP_ACT_NOTIFY and listener_state is None
    (the caller sends it on, for instance with send_notify_fd from outside the container).
    With listener_state, load sends the fd and listener_state itself, on ``listener`` or on a
    fresh connection to listenerPath made before the filter goes in, then closes the fd and
    returns None: after loading it only calls sendmsg and close.
    """
    if seccomp is None:
        return None
    p = plan(seccomp)
    f, notify = _build(p)
    own_sock = False
    try:
        if notify and listener_state is not None and listener is None:
            listener = connect_listener(p.listener_path)
            own_sock = True
        try:
            f.load()
        except SyscallError as exc:
            hint = ""
            if exc.errno == 13:  # EACCES
                hint = f"{FIELD}: without no_new_privs loading a filter needs CAP_SYS_ADMIN"
            raise SyscallError("seccomp_load", exc.errno, None, hint or FIELD) from None
        if not notify:
            # Also when every notified syscall is unknown here: no listener exists, and those
            # syscalls cannot be made on this machine anyway.
            return None
        fd = f.notify_fd()
        if listener_state is None or listener is None:
            return fd
        try:
            _send(listener, fd, listener_state, p.listener_path)
        finally:
            os.close(fd)
        return None
    finally:
        if own_sock and listener is not None:
            listener.close()
        # Released last: freeing the filter may unmap memory, which a profile could notify.
        f.release()


# --- compiled programs, cached ------------------------------------------------------------------

#: OCI flag -> seccomp(2) flag, for programs loaded without libseccomp (see compile_cached).
_RAW_FLAGS: Final[dict[str, int]] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
CACHE_DIR: Final = "@seccomp"  # "@" is not allowed in a container id: no clash in the root
_CACHE_MAX: Final = 32
_PROGRAM_MAX: Final = 8 * 0xFFFF  # sock_fprog.len is an unsigned short


class Compiled:
    """A profile's BPF program, as libseccomp generates it, and the seccomp(2) flags to load
    it with: loading is then one system call in the init."""

    __slots__ = ("flags", "program")

    def __init__(self, program: bytes, flags: int) -> None:
        self.program = program
        self.flags = flags

    def load(self) -> None:
        from kettle import syscalls as sc

        try:
            sc.seccomp_set_filter(self.program, self.flags)
        except SyscallError as exc:
            hint = FIELD
            if exc.errno == 13:  # EACCES
                hint = f"{FIELD}: without no_new_privs loading a filter needs CAP_SYS_ADMIN"
            raise SyscallError("seccomp", exc.errno, None, hint) from None


def _cache_key(seccomp: Mapping[str, Any]) -> str:
    """What the generated program depends on: the profile, libseccomp, the kernel (its api
    level, release and architecture)."""
    from kettle.runtime import jsonio
    from kettle.syscalls import seccomp as scmp

    try:
        # The C module itself: hashlib loads OpenSSL first (~3 ms on every create).
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # Python 3.12 merged it into _sha2
        from hashlib import sha256

    u = os.uname()
    # Keys in the spec's own order: the same profile written another way only costs one
    # more entry.
    text = jsonio.dumps(
        [seccomp, scmp.version(), scmp.api_level(), u.release, u.machine], separators=(",", ":")
    )
    return str(sha256(text.encode()).hexdigest())


def _read_cached(path: str) -> bytes | None:
    """The cached program at path, if it is one we wrote: a regular file of this user that
    nobody else can write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            st.st_uid != os.geteuid()
            or st.st_mode & 0o022
            or (st.st_mode & 0o170000) != 0o100000
            or not 0 < st.st_size <= _PROGRAM_MAX
            or st.st_size % 8
        ):
            return None
        data = os.read(fd, st.st_size)
        return data if len(data) == st.st_size else None
    finally:
        os.close(fd)


def _write_cached(cache: str, path: str, program: bytes) -> None:
    """Atomically, best effort: a cache that cannot be written costs the next create the
    compilation again, nothing else."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(cache, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        # A file object writes every byte (os.write may write fewer): a program cut short
        # would fail every later load.
        with open(fd, "wb") as f:
            f.write(program)
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # never created, or renamed already
        return  # read-only or full state root: the program is still used from memory
    try:
        names = [n for n in os.listdir(cache) if n.endswith(".bpf")]
        if len(names) > _CACHE_MAX:
            # A bounded cache: the least recently written programs go first.
            by_age = sorted(names, key=lambda n: os.stat(os.path.join(cache, n)).st_mtime_ns)
            for name in by_age[: len(names) - _CACHE_MAX]:
                os.unlink(os.path.join(cache, name))
    except OSError:
        pass  # another runtime evicted the same entry first


class Programs:
    """Compiled programs by profile, kept in memory (a long-lived caller: the shim) or in a
    directory (kettle-runtime, one process per operation: ``root/@seccomp``), or not at all.

    Generating the program is most of the cost of seccomp (about 15 ms for Docker's profile
    here: 7 ms adding the rules, 8 ms generating BPF), and every container of an engine gets
    one of a handful of profiles; libseccomp's own seccomp_load would generate it again in
    each init, after ``start`` has been called.
    """

    def __init__(self, directory: str | None = None, in_memory: bool = False) -> None:
        self.directory = directory
        self._memory: dict[str, Compiled] | None = None
        if in_memory:
            import threading  # the shim's containers are created on several threads

            self._memory = {}
            self._lock = threading.Lock()

    def get(self, seccomp: Mapping[str, Any] | None) -> Compiled | None:
        """The profile compiled to BPF (cached or made now, which validates it all); None
        for profiles that need libseccomp at load time (a notify listener, or a flag that
        seccomp(2) is not given directly)."""
        if seccomp is None:
            return None
        key = ""
        if self._memory is not None:
            # Before plan(): a program in memory was made from this very profile, so it was
            # checked then (the shim's helper asks again for what its parent just compiled).
            key = _cache_key(seccomp)
            with self._lock:
                known = self._memory.get(key)
            if known is not None:
                return known
        p = plan(seccomp)
        if p.notify or p.listener_path or any(flag not in _RAW_FLAGS for _, flag in p.flags):
            return None
        key = key or _cache_key(seccomp)
        flags = 0
        for _, flag in p.flags:
            flags |= _RAW_FLAGS[flag]
        path = os.path.join(self.directory, f"{key}.bpf") if self.directory else None
        program = _read_cached(path) if path else None
        if program is None:
            program = _generate(p)
            if self.directory and path:
                _write_cached(self.directory, path, program)
        compiled = Compiled(program, flags)
        if self._memory is not None:
            with self._lock:
                while len(self._memory) >= _CACHE_MAX:
                    del self._memory[next(iter(self._memory))]  # the oldest entry
                self._memory[key] = compiled
        return compiled


def compile_cached(seccomp: Mapping[str, Any] | None, root: str | None) -> Compiled | None:
    """Programs kept in ``root/@seccomp`` (kettle-runtime's own cache)."""
    return Programs(os.path.join(root, CACHE_DIR) if root else None).get(seccomp)


def _generate(p: Plan) -> bytes:
    f, _ = _build(p)
    try:
        # A memfd, not a pipe: a large program would fill a pipe before anyone reads it.
        fd = os.memfd_create("kettle-seccomp", os.MFD_CLOEXEC)
        try:
            f.export_bpf(fd)
            size = os.lseek(fd, 0, os.SEEK_CUR)
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        f.release()
    if not program or len(program) % 8 or len(program) > _PROGRAM_MAX:
        raise SyscallError("seccomp_export_bpf", 22, None, f"{FIELD}: {len(program)} bytes")
    return program


def describe(seccomp: Mapping[str, Any]) -> list[str]:
    """One line per rule of the translated profile (for debugging)."""
    p = plan(seccomp)
    ops = {v: k for k, v in _OPERATORS.items()}
    lines = [f"default {action_name(p.default_action)}"]
    for r in p.rules:
        args = " && ".join(f"arg{i} {ops[op]} {a:#x},{b:#x}" for i, op, a, b in r.args)
        lines.append(f"{r.syscall} {action_name(r.action)}" + (f" if {args}" if args else ""))
    return lines


def action_name(action: int) -> str:
    """The OCI name of a libseccomp action value (with its data for ERRNO and TRACE)."""
    if action == _ACT_KILL_PROCESS:
        return "SCMP_ACT_KILL_PROCESS"
    base = action & 0xFFFF0000
    data = action & 0xFFFF
    if base == _ACT_ERRNO:
        return f"SCMP_ACT_ERRNO({data})"
    if base == _ACT_TRACE:
        return f"SCMP_ACT_TRACE({data})"
    for name, value in _ACTIONS.items():
        if value == action and name != "SCMP_ACT_KILL":
            return name
    return f"{action:#x}"
