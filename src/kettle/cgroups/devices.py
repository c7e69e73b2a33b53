"""Device cgroup rules: parsing the OCI lists, their meaning, and the cgroup v1 translation.

Meaning (shared by the v1 lists and the v2 BPF program): a request for some of r/w/m on a
device is allowed when, for each requested operation, the last rule that matches the device
and lists that operation allows it; with no matching rule the operation is denied.

cgroup v1 cannot express every such list: its exception list can only remove whole entries
(a deny cannot punch a hole into an earlier, broader allow).  Such lists are refused on v1
with the rule named, rather than applied differently.  One more v1 limit, kept as the kernel
has it: one exception must grant all operations of a single open (an "r" on c 1:3 plus a "w"
on c *:* does not let v1 open /dev/null read-write; the BPF filter does).
"""

from __future__ import annotations

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping

from kettle.errors import InvalidArgument

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

ACCESS_ORDER = "rwm"

# Rule and V1State are plain classes, not dataclasses: importing dataclasses costs about 10 ms
# on every create and update.


class Rule:
    """One device rule; immutable and hashable, equal when all but origin are equal."""

    __slots__ = ("access", "allow", "major", "minor", "origin", "type")

    allow: bool
    type: str  # "a" (all), "b" (block) or "c" (char)
    major: int  # -1 matches any
    minor: int
    access: str  # a non-empty subset of "rwm", in that order
    #: where the rule came from, for error messages
    origin: str

    def __init__(
        self,
        allow: bool,
        type: str = "a",
        major: int = -1,
        minor: int = -1,
        access: str = "rwm",
        origin: str = "",
    ) -> None:
        # Shared rules (DEFAULT_ALLOWED) must not change under their users: frozen.
        setattr_ = object.__setattr__
        setattr_(self, "allow", allow)
        setattr_(self, "type", type)
        setattr_(self, "major", major)
        setattr_(self, "minor", minor)
        setattr_(self, "access", access)
        setattr_(self, "origin", origin)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen Rule")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen Rule")

    def _key(self) -> tuple[bool, str, int, int, str]:
        return (self.allow, self.type, self.major, self.minor, self.access)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rule):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # copy and pickle would otherwise restore the slots through the refused __setattr__.
        return (Rule, (*self._key(), self.origin))

    def __repr__(self) -> str:
        return (
            f"Rule(allow={self.allow!r}, type={self.type!r}, major={self.major!r}, "
            f"minor={self.minor!r}, access={self.access!r}, origin={self.origin!r})"
        )

    def matches(self, dev_type: str, major: int, minor: int) -> bool:
        return (
            (self.type == "a" or self.type == dev_type)
            and (self.major == -1 or self.major == major)
            and (self.minor == -1 or self.minor == minor)
        )

    @property
    def is_everything(self) -> bool:
        return self.type == "a" and self.major == -1 and self.minor == -1

    def line(self) -> str:
        """The v1 devices.allow/deny syntax ("c 1:3 rwm", "b *:* m")."""
        return f"{self.type} {_num(self.major)}:{_num(self.minor)} {self.access}"


def _num(n: int) -> str:
    return "*" if n == -1 else str(n)


def _canon_access(text: str, where: str) -> str:
    if not isinstance(text, str) or not text or any(ch not in ACCESS_ORDER for ch in text):
        raise InvalidArgument(f'{where}.access: {text!r} is not a subset of "rwm"')
    return "".join(ch for ch in ACCESS_ORDER if ch in text)


def _devnum(value: Any, where: str) -> int:
    # Real numbers are far below 2**31; the bound keeps them exact as 32-bit BPF immediates.
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < -1 or value > 0x7FFFFFFF:
        raise InvalidArgument(f"{where}: {value!r} is not a device number")
    return value


def parse_rules(items: Any, where: str = "linux.resources.devices") -> list[Rule]:
    """OCI linux.resources.devices -> rules."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidArgument(f"{where}: must be a list")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidArgument(f"{at}: must be an object")
        unknown = set(item) - {"allow", "type", "major", "minor", "access"}
        if unknown:
            raise InvalidArgument(f"{at}: unknown field {sorted(unknown)[0]}")
        allow = item.get("allow")
        if not isinstance(allow, bool):
            raise InvalidArgument(f"{at}.allow: must be true or false")
        dev_type = item.get("type") or "a"
        if dev_type not in ("a", "b", "c"):
            raise InvalidArgument(f"{at}.type: {dev_type!r} is not one of a, b, c")
        access = item.get("access")
        out.append(
            Rule(
                allow=allow,
                type=dev_type,
                major=_devnum(item.get("major"), f"{at}.major"),
                minor=_devnum(item.get("minor"), f"{at}.minor"),
                access=_canon_access("rwm" if access in (None, "") else access, at),
                origin=at,
            )
        )
    return out


def rules_for_devices(devices: Any, where: str = "linux.devices") -> list[Rule]:
    """Allow rules for the device nodes the runtime creates (OCI linux.devices), as runc adds."""
    if devices is None:
        return []
    if not isinstance(devices, list):
        raise InvalidArgument(f"{where}: must be a list")
    out = []
    for i, dev in enumerate(devices):
        at = f"{where}[{i}]"
        if not isinstance(dev, Mapping):
            raise InvalidArgument(f"{at}: must be an object")
        kind = dev.get("type")
        if kind == "p":
            continue  # a fifo is not a device: the device cgroup never sees it
        if kind not in ("c", "u", "b"):
            raise InvalidArgument(f"{at}.type: {kind!r} is not one of c, u, b, p")
        out.append(
            Rule(
                allow=True,
                type="b" if kind == "b" else "c",
                major=_devnum(dev.get("major"), f"{at}.major"),
                minor=_devnum(dev.get("minor"), f"{at}.minor"),
                access="rwm",
                origin=at,
            )
        )
    return out


def _default(kind: str, major: int, minor: int, access: str, name: str) -> Rule:
    return Rule(True, kind, major, minor, access, origin=f"default device rule {name}")


#: runc 1.1's AllowedDevices, appended after the spec's rules (so the spec cannot take them away).
DEFAULT_ALLOWED: tuple[Rule, ...] = (
    _default("c", -1, -1, "m", "c *:* m"),
    _default("b", -1, -1, "m", "b *:* m"),
    _default("c", 1, 3, "rwm", "/dev/null"),
    _default("c", 1, 8, "rwm", "/dev/random"),
    _default("c", 1, 7, "rwm", "/dev/full"),
    _default("c", 5, 0, "rwm", "/dev/tty"),
    _default("c", 1, 5, "rwm", "/dev/zero"),
    _default("c", 1, 9, "rwm", "/dev/urandom"),
    _default("c", 136, -1, "rwm", "/dev/pts/*"),
    _default("c", 5, 2, "rwm", "/dev/ptmx"),
    _default("c", 10, 200, "rwm", "/dev/net/tun"),
)


def container_rules(
    resources_devices: Any, linux_devices: Any = None, *, defaults: bool = True
) -> list[Rule]:
    """The full rule list of a container: spec rules, then linux.devices, then runc's defaults."""
    rules = parse_rules(resources_devices)
    rules += rules_for_devices(linux_devices)
    if defaults:
        rules += DEFAULT_ALLOWED
    return rules


# --- the meaning ---------------------------------------------------------------------------


def allowed(rules: Sequence[Rule], dev_type: str, major: int, minor: int, access: str) -> bool:
    """Whether the rules let a process do all of access ("r", "rw", ...) on the device."""
    for op in access:
        verdict = False
        for rule in reversed(rules):
            if op in rule.access and rule.matches(dev_type, major, minor):
                verdict = rule.allow
                break
        if not verdict:
            return False
    return True


# --- cgroup v1 -------------------------------------------------------------------------------

Key = tuple[str, int, int]


class V1State:
    """A v1 device cgroup: its default and its exceptions (type b/c, major, minor) -> access."""

    __slots__ = ("default_allow", "exact", "exceptions")

    def __init__(
        self, default_allow: bool, exceptions: dict[Key, str] | None = None, exact: bool = True
    ) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[Key, str] = {} if exceptions is None else exceptions
        #: False when read from a devices.list that cannot show the exceptions (allow-all mode)
        self.exact = exact

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, V1State):
            return NotImplemented
        return (self.default_allow, self.exceptions, self.exact) == (
            other.default_allow,
            other.exceptions,
            other.exact,
        )

    def __repr__(self) -> str:
        return (
            f"V1State(default_allow={self.default_allow!r}, exceptions={self.exceptions!r}, "
            f"exact={self.exact!r})"
        )

    def allows(self, dev_type: str, major: int, minor: int, op: str) -> bool:
        hit = any(
            op in acc and (t == dev_type) and mj in (-1, major) and mn in (-1, minor)
            for (t, mj, mn), acc in self.exceptions.items()
        )
        return hit != self.default_allow


def _merge(a: str, b: str) -> str:
    return "".join(ch for ch in ACCESS_ORDER if ch in a or ch in b)


def _minus(a: str, b: str) -> str:
    return "".join(ch for ch in ACCESS_ORDER if ch in a and ch not in b)


def _key_line(key: Key, access: str) -> str:
    return f"{key[0]} {_num(key[1])}:{_num(key[2])} {access}"


def to_v1(rules: Iterable[Rule]) -> V1State:
    """The v1 state with the same meaning as rules; InvalidArgument where v1 cannot say it."""
    st = V1State(default_allow=False)
    for rule in rules:
        if rule.is_everything and rule.access == ACCESS_ORDER:
            st = V1State(default_allow=rule.allow)
            continue
        # The kernel reads a leading "a" as "everything", so narrower "a" rules go in per type.
        types = ("b", "c") if rule.type == "a" else (rule.type,)
        if rule.allow != st.default_allow:
            for t in types:
                key = (t, rule.major, rule.minor)
                st.exceptions[key] = _merge(st.exceptions.get(key, ""), rule.access)
            continue
        for key, acc in list(st.exceptions.items()):
            t, mj, mn = key
            if not set(acc) & set(rule.access):
                continue
            if t not in types:
                continue
            if not (rule.major in (-1, mj) or mj == -1) or not (rule.minor in (-1, mn) or mn == -1):
                continue  # disjoint devices
            if rule.major in (-1, mj) and rule.minor in (-1, mn):
                rest = _minus(acc, rule.access)
                if rest:
                    st.exceptions[key] = rest
                else:
                    del st.exceptions[key]
                continue
            verb = "allow" if rule.allow else "deny"
            raise InvalidArgument(
                f"{rule.origin or 'device rule'}: cgroup v1 cannot {verb} {rule.line()} "
                f"inside the broader earlier rule {_key_line(key, acc)}"
            )
    return st


def parse_v1_list(text: str) -> V1State:
    """A devices.list: "a *:* rwm" means allow-all (its deny exceptions are not shown)."""
    st = V1State(default_allow=False)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        kind, nums, access = parts
        if kind == "a":
            return V1State(default_allow=True, exact=False)
        mj, _, mn = nums.partition(":")
        key = (kind, -1 if mj == "*" else int(mj), -1 if mn == "*" else int(mn))
        st.exceptions[key] = _merge(st.exceptions.get(key, ""), access)
    return st


def v1_writes(current: V1State | None, target: V1State) -> list[tuple[str, str]]:
    """(file, line) writes that take a cgroup from current to target.

    Between two deny-by-default states only the difference is written, so a running container
    (``update``) never loses access to a device both states allow; otherwise the list is reset.
    """
    allow_file, deny_file = "devices.allow", "devices.deny"
    if (
        current is not None
        and current.exact
        and not current.default_allow
        and not target.default_allow
    ):
        out: list[tuple[str, str]] = []
        for key, acc in current.exceptions.items():
            gone = _minus(acc, target.exceptions.get(key, ""))
            if gone:
                out.append((deny_file, _key_line(key, gone)))
        for key, acc in target.exceptions.items():
            new = _minus(acc, current.exceptions.get(key, ""))
            if new:
                out.append((allow_file, _key_line(key, new)))
        return out
    if target.default_allow:
        out = [(allow_file, "a")]
        out += [(deny_file, _key_line(k, a)) for k, a in target.exceptions.items()]
    else:
        out = [(deny_file, "a")]
        out += [(allow_file, _key_line(k, a)) for k, a in target.exceptions.items()]
    return out
