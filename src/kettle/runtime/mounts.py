"""Mount options, mountinfo and the spec fields of the root filesystem, parsed and checked.

Pure: nothing here mounts.  ``validate`` runs in the runtime at ``create`` (so a bad spec fails
before anything is forked); :mod:`kettle.runtime.rootfs` reuses the same parsers in the
container's init.  Option names and their meaning follow runc 1.1 (``libcontainer/specconv``).
"""

from __future__ import annotations

import posixpath

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping, Sequence

from kettle import syscalls as sc
from kettle.errors import InvalidArgument, Unimplemented
from kettle.runtime import devices

# Not typing.TYPE_CHECKING: the runtime starts once per container operation and typing (with
# the contextlib it pulls in) costs milliseconds; the classes below are plain for the same
# reason (dataclasses costs ~15 ms to import and ~1 ms per class).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

# Not in kettle.syscalls: only option parsing needs them.
MS_POSIXACL: Final = 1 << 16
MS_I_VERSION: Final = 1 << 23

# mount_setattr(2) attributes (linux/mount.h).
MOUNT_ATTR_RDONLY: Final = 0x00000001
MOUNT_ATTR_NOSUID: Final = 0x00000002
MOUNT_ATTR_NODEV: Final = 0x00000004
MOUNT_ATTR_NOEXEC: Final = 0x00000008
MOUNT_ATTR__ATIME: Final = 0x00000070
MOUNT_ATTR_RELATIME: Final = 0x00000000
MOUNT_ATTR_NOATIME: Final = 0x00000010
MOUNT_ATTR_STRICTATIME: Final = 0x00000020
MOUNT_ATTR_NODIRATIME: Final = 0x00000080
MOUNT_ATTR_NOSYMFOLLOW: Final = 0x00200000

#: option -> (clears the flag, MS_* flag)
_FLAGS: Final[dict[str, tuple[bool, int]]] = {
    "acl": (False, MS_POSIXACL),
    "async": (True, sc.MS_SYNCHRONOUS),
    "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC),
    "iversion": (False, MS_I_VERSION),
    "lazytime": (False, sc.MS_LAZYTIME),
    "loud": (True, sc.MS_SILENT),
    "mand": (False, sc.MS_MANDLOCK),
    "noacl": (True, MS_POSIXACL),
    "noatime": (False, sc.MS_NOATIME),
    "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC),
    "noiversion": (True, MS_I_VERSION),
    "nolazytime": (True, sc.MS_LAZYTIME),
    "nomand": (True, sc.MS_MANDLOCK),
    "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosuid": (False, sc.MS_NOSUID),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "silent": (False, sc.MS_SILENT),
    "strictatime": (False, sc.MS_STRICTATIME),
    "suid": (True, sc.MS_NOSUID),
    "sync": (False, sc.MS_SYNCHRONOUS),
}

PROPAGATION: Final[dict[str, int]] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

#: recursive attributes (mount_setattr with AT_RECURSIVE): option -> (clears, MOUNT_ATTR_*)
_REC_ATTRS: Final[dict[str, tuple[bool, int]]] = {
    "rro": (False, MOUNT_ATTR_RDONLY),
    "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID),
    "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV),
    "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC),
    "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, MOUNT_ATTR_RELATIME),
    "rnoatime": (False, MOUNT_ATTR_NOATIME),
    "ratime": (True, MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}

_EXTENSIONS: Final = ("tmpcopyup", "notmpcopyup")

#: runc 1.2 options this runtime knows but does not implement: refused, never passed as data.
_UNSUPPORTED: Final[dict[str, str]] = {
    "idmap": "idmapped mounts are not supported",
    "ridmap": "idmapped mounts are not supported",
}

#: every option name with a meaning of its own (the rest are filesystem data such as size=).
KNOWN_OPTIONS: Final[frozenset[str]] = frozenset([*_FLAGS, *PROPAGATION, *_REC_ATTRS, *_EXTENSIONS])

_ATIME_FLAGS: Final = sc.MS_NOATIME | sc.MS_RELATIME | sc.MS_STRICTATIME | sc.MS_NODIRATIME

#: flags that a bind remount in a user namespace must keep when the mount below has them
#: (the kernel locks them when it copies a mount into a less privileged namespace).
LOCKED_FLAGS: Final = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC

#: Files under /proc that may be mounted over (lxcfs emulates them); runc's list.
PROC_ALLOWLIST: Final = frozenset(
    {
        "/proc/cpuinfo",
        "/proc/diskstats",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/swaps",
        "/proc/uptime",
        "/proc/loadavg",
        "/proc/slabinfo",
        "/proc/net/dev",
        "/proc/sys/kernel/ns_last_pid",
    }
)


class MountOptions:
    """What a mount's ``options`` list asks for (treated as immutable: ``replace`` copies)."""

    __slots__ = (
        "clear_flags",
        "data",
        "flags",
        "propagation",
        "rec_attr_clr",
        "rec_attr_set",
        "tmpcopyup",
    )

    def __init__(
        self,
        flags: int = 0,
        clear_flags: int = 0,
        propagation: list[int] | None = None,
        data: str = "",
        rec_attr_set: int = 0,
        rec_attr_clr: int = 0,
        tmpcopyup: bool = False,
    ) -> None:
        #: MS_* flags to set (bind and rbind included)
        self.flags = flags
        #: MS_* flags an option explicitly cleared (rw, suid, dev, exec, atime, ...)
        self.clear_flags = clear_flags
        #: MS_* propagation changes, applied in order after the mount
        self.propagation: list[int] = [] if propagation is None else propagation
        #: filesystem-specific options, comma-joined (mode=755,size=65536k)
        self.data = data
        #: recursive MOUNT_ATTR_* to set and to clear (rro, rnosuid, ...)
        self.rec_attr_set = rec_attr_set
        self.rec_attr_clr = rec_attr_clr
        self.tmpcopyup = tmpcopyup

    def replace(self, *, flags: int | None = None, data: str | None = None) -> MountOptions:
        """A copy with other flags and/or data."""
        return MountOptions(
            self.flags if flags is None else flags,
            self.clear_flags,
            self.propagation,
            self.data if data is None else data,
            self.rec_attr_set,
            self.rec_attr_clr,
            self.tmpcopyup,
        )

    def _key(self) -> tuple[int, int, list[int], str, int, int, bool]:
        return (
            self.flags,
            self.clear_flags,
            self.propagation,
            self.data,
            self.rec_attr_set,
            self.rec_attr_clr,
            self.tmpcopyup,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MountOptions) and self._key() == other._key()

    # No __hash__ (defining __eq__ drops it): propagation is a list, as before.

    def __repr__(self) -> str:
        return (
            f"MountOptions(flags={self.flags!r}, clear_flags={self.clear_flags!r}, "
            f"propagation={self.propagation!r}, data={self.data!r}, "
            f"rec_attr_set={self.rec_attr_set!r}, rec_attr_clr={self.rec_attr_clr!r}, "
            f"tmpcopyup={self.tmpcopyup!r})"
        )

    @property
    def bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)

    @property
    def rbind(self) -> bool:
        return self.bind and bool(self.flags & sc.MS_REC)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & sc.MS_RDONLY)

    @property
    def needs_remount(self) -> bool:
        """A bind mount ignores flags: anything beyond bind/rec needs a MS_REMOUNT|MS_BIND."""
        return self.bind and bool(self.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT))

    @property
    def ro_remount(self) -> bool:
        return self.bind and self.readonly

    @property
    def has_rec_attrs(self) -> bool:
        return bool(self.rec_attr_set or self.rec_attr_clr)

    @property
    def sets_atime(self) -> bool:
        """True when an option chose the access-time behaviour."""
        return bool((self.flags | self.clear_flags) & _ATIME_FLAGS)


def parse_options(options: Sequence[Any] | None, field: str) -> MountOptions:
    """Parse a spec mount's options as runc does; unknown names become filesystem data.

    ``field`` names the list in errors (``mounts[2].options``).
    """
    if options is None:
        return MountOptions()
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise InvalidArgument(f"{field}: must be a list of strings")
    flags = clear = rec_set = rec_clr = 0
    prop: list[int] = []
    data: list[str] = []
    copyup = False
    for j, opt in enumerate(options):
        where = f"{field}[{j}]"
        if not isinstance(opt, str):
            raise InvalidArgument(f"{where}: must be a string")
        if not opt:
            raise InvalidArgument(f"{where}: empty option")
        if "\0" in opt:
            raise InvalidArgument(f"{where}: contains a NUL byte")
        if opt in _FLAGS:
            clears, flag = _FLAGS[opt]
            if clears:
                flags &= ~flag
                clear |= flag
            else:
                flags |= flag
                clear &= ~flag
        elif opt in PROPAGATION:
            prop.append(PROPAGATION[opt])
        elif opt in _REC_ATTRS:
            clears, attr = _REC_ATTRS[opt]
            if clears:
                rec_clr |= attr
            else:
                rec_set |= attr
                if attr & MOUNT_ATTR__ATIME == attr:
                    # mount_setattr(2): an atime setting must also clear MOUNT_ATTR__ATIME
                    rec_clr |= MOUNT_ATTR__ATIME
        elif opt in _EXTENSIONS:
            copyup = opt == "tmpcopyup"
        elif opt in _UNSUPPORTED:
            raise Unimplemented(f"{where}: {opt}: {_UNSUPPORTED[opt]}")
        else:
            data.append(opt)
    return MountOptions(flags, clear, prop, ",".join(data), rec_set, rec_clr, copyup)


def propagation_flag(value: Any, field: str = "linux.rootfsPropagation") -> int:
    """MS_* for a propagation name; 0 for none given."""
    if value is None or value == "":
        return 0
    if not isinstance(value, str) or value not in PROPAGATION:
        raise InvalidArgument(
            f"{field}: unsupported value {value!r} (one of {', '.join(sorted(PROPAGATION))})"
        )
    return PROPAGATION[value]


class Mount:
    """One entry of the spec's ``mounts``, checked (treated as immutable)."""

    __slots__ = ("destination", "index", "options", "source", "type")

    def __init__(
        self,
        index: int,
        destination: str,
        type: str | None,
        source: str | None,
        options: MountOptions,
    ) -> None:
        self.index = index
        #: absolute and lexically clean (no "." or "..", no trailing slash)
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options

    def _key(self) -> tuple[int, str, str | None, str | None, MountOptions]:
        return (self.index, self.destination, self.type, self.source, self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mount) and self._key() == other._key()

    # No __hash__: options is not hashable either.

    def __repr__(self) -> str:
        return (
            f"Mount(index={self.index!r}, destination={self.destination!r}, "
            f"type={self.type!r}, source={self.source!r}, options={self.options!r})"
        )

    @property
    def field(self) -> str:
        return f"mounts[{self.index}]"

    @property
    def is_bind(self) -> bool:
        return self.options.bind


def clean_path(path: str) -> str:
    """Lexical clean of an absolute path ("/a/./b/../c/" -> "/a/c"); ".." stops at "/"."""
    out = posixpath.normpath("/" + path)
    # normpath keeps a leading "//" (POSIX allows it to mean something else); we do not.
    return "/" + out.lstrip("/")


def parse_mount(entry: Any, index: int) -> Mount:
    """Check one spec mount and parse its options."""
    where = f"mounts[{index}]"
    if not isinstance(entry, Mapping):
        raise InvalidArgument(f"{where}: must be an object")
    dest = entry.get("destination")
    if not isinstance(dest, str) or not dest:
        raise InvalidArgument(f"{where}.destination: required")
    if "\0" in dest:
        raise InvalidArgument(f"{where}.destination: contains a NUL byte")
    if not dest.startswith("/"):
        raise InvalidArgument(f"{where}.destination: must be absolute ({dest!r})")
    clean = clean_path(dest)
    if clean == "/":
        raise InvalidArgument(f"{where}.destination: cannot mount over the root (use root.path)")
    fstype = entry.get("type")
    if fstype is not None and (not isinstance(fstype, str) or "\0" in fstype):
        raise InvalidArgument(f"{where}.type: must be a string")
    source = entry.get("source")
    if source is not None and (not isinstance(source, str) or "\0" in source):
        raise InvalidArgument(f"{where}.source: must be a string")
    opts = parse_options(entry.get("options"), f"{where}.options")
    if fstype == "bind" and not opts.bind:
        # runc treats type "bind" without a bind option as a plain bind; so does crun.
        opts = opts.replace(flags=opts.flags | sc.MS_BIND)
    if opts.bind:
        if not source:
            raise InvalidArgument(f"{where}.source: a bind mount needs a source")
    elif not fstype and not opts.flags & sc.MS_REMOUNT:
        raise InvalidArgument(f"{where}.type: required unless options include bind or rbind")
    if opts.tmpcopyup and (opts.bind or fstype != "tmpfs"):
        raise InvalidArgument(f"{where}.options: tmpcopyup is only valid for tmpfs mounts")
    return Mount(index, clean, None if opts.bind else fstype, source, opts)


def parse_mounts(spec: Mapping[str, Any]) -> list[Mount]:
    raw = spec.get("mounts")
    if raw is None:
        return []
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise InvalidArgument("mounts: must be a list")
    return [parse_mount(m, i) for i, m in enumerate(raw)]


def proc_mount_problem(dest: str, fstype: str | None, *, bind: bool) -> str | None:
    """Why mounting at dest (clean, as seen inside the container) is refused; None if it is not.

    Like runc: nothing may cover a file under /proc but the lxcfs-style allowlist, and /proc
    itself only takes a proc filesystem (a bind's source is checked when it is mounted).
    """
    if dest == "/proc":
        if fstype == "proc" or bind:
            return None
        return f"{dest} cannot be mounted because it is not of type proc"
    if not dest.startswith("/proc/"):
        return None
    if dest in PROC_ALLOWLIST:
        return None
    return f"{dest} cannot be mounted because it is inside /proc"


def _paths(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidArgument(f"{field}: must be a list of absolute paths")
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
            raise InvalidArgument(f"{field}[{i}]: must be an absolute path ({p!r})")
        out.append(p)
    return out


def masked_paths(spec: Mapping[str, Any]) -> list[str]:
    return _paths((spec.get("linux") or {}).get("maskedPaths"), "linux.maskedPaths")


def readonly_paths(spec: Mapping[str, Any]) -> list[str]:
    return _paths((spec.get("linux") or {}).get("readonlyPaths"), "linux.readonlyPaths")


def validate(spec: Mapping[str, Any]) -> None:
    """Check mounts, rootfsPropagation, maskedPaths, readonlyPaths, devices and root.readonly.

    Raises InvalidArgument (or Unimplemented) naming the field at fault.  Reads no files: a
    bind mount's source and anything inside the image are checked when mounting.
    """
    for m in parse_mounts(spec):
        problem = proc_mount_problem(m.destination, m.type, bind=m.is_bind)
        if problem:
            raise InvalidArgument(f"{m.field}.destination: {problem}")
        if m.options.has_rec_attrs and getattr(sc, "mount_setattr", None) is None:
            raise Unimplemented(
                f"{m.field}.options: recursive mount attributes (rro, rnosuid, ...) need "
                "mount_setattr, which kettle.syscalls does not provide"
            )
    linux = spec.get("linux")
    if linux is None:
        linux = {}
    if not isinstance(linux, Mapping):
        raise InvalidArgument("linux: must be an object")
    propagation_flag(linux.get("rootfsPropagation"))
    masked_paths(spec)
    readonly_paths(spec)
    devices.parse_devices(linux.get("devices"))
    root = spec.get("root")
    if root is not None:
        if not isinstance(root, Mapping):
            raise InvalidArgument("root: must be an object")
        if not isinstance(root.get("readonly", False), bool):
            raise InvalidArgument("root.readonly: must be a boolean")


# --- /proc/self/mountinfo ------------------------------------------------------------------


class MountInfo:
    """One line of /proc/self/mountinfo (treated as immutable)."""

    __slots__ = (
        "dev",
        "fstype",
        "mount_id",
        "mountpoint",
        "optional",
        "options",
        "parent_id",
        "root",
        "source",
        "super_options",
    )

    def __init__(
        self,
        mount_id: int,
        parent_id: int,
        dev: str,
        root: str,
        mountpoint: str,
        options: str,
        optional: tuple[str, ...],
        fstype: str,
        source: str,
        super_options: str,
    ) -> None:
        self.mount_id = mount_id
        self.parent_id = parent_id
        #: "major:minor" of the filesystem
        self.dev = dev
        #: the directory of the filesystem shown at the mount point
        self.root = root
        self.mountpoint = mountpoint
        self.options = options
        #: optional fields: "shared:N", "master:N", "propagate_from:N", "unbindable"
        self.optional = optional
        self.fstype = fstype
        self.source = source
        self.super_options = super_options

    def _key(self) -> tuple[int, int, str, str, str, str, tuple[str, ...], str, str, str]:
        return (
            self.mount_id,
            self.parent_id,
            self.dev,
            self.root,
            self.mountpoint,
            self.options,
            self.optional,
            self.fstype,
            self.source,
            self.super_options,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MountInfo) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"MountInfo(mount_id={self.mount_id!r}, parent_id={self.parent_id!r}, "
            f"dev={self.dev!r}, root={self.root!r}, mountpoint={self.mountpoint!r}, "
            f"options={self.options!r}, optional={self.optional!r}, fstype={self.fstype!r}, "
            f"source={self.source!r}, super_options={self.super_options!r})"
        )

    @property
    def shared(self) -> bool:
        return any(o.startswith("shared:") for o in self.optional)


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (\\040 space, \\011 tab, \\012 newline, \\134 backslash)."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountInfo]:
    out = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue  # not a mount line (the format is fixed; skip anything else)
        if len(fields) < sep + 4:
            continue
        out.append(
            MountInfo(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                dev=fields[2],
                root=unescape(fields[3]),
                mountpoint=unescape(fields[4]),
                options=fields[5],
                optional=tuple(fields[6:sep]),
                fstype=fields[sep + 1],
                source=unescape(fields[sep + 2]),
                super_options=fields[sep + 3],
            )
        )
    return out


def is_within(path: str, top: str) -> bool:
    """path is top or below it (both absolute and clean)."""
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def mount_of(infos: Sequence[MountInfo], path: str) -> MountInfo | None:
    """The mount that holds path (clean, absolute): the topmost one at the longest prefix."""
    best: MountInfo | None = None
    for info in infos:
        if is_within(path, info.mountpoint) and (
            best is None or len(info.mountpoint) >= len(best.mountpoint)
        ):
            best = info
    return best


_ST_RDONLY: Final = 0x0001
_ST_NOSUID: Final = 0x0002
_ST_NODEV: Final = 0x0004
_ST_NOEXEC: Final = 0x0008
_ST_NOATIME: Final = 0x0400
_ST_NODIRATIME: Final = 0x0800
_ST_RELATIME: Final = 0x1000
_ST_NOSYMFOLLOW: Final = 0x2000


def flags_from_statvfs(f_flag: int) -> int:
    """The per-mount MS_* flags a bind remount must pass to keep a mount as it is.

    A bind remount replaces all per-mount flags, and the atime mode defaults to relatime when
    none is given, so the current mode is always spelled out (strictatime included).
    """
    out = 0
    for st, ms in (
        (_ST_RDONLY, sc.MS_RDONLY),
        (_ST_NOSUID, sc.MS_NOSUID),
        (_ST_NODEV, sc.MS_NODEV),
        (_ST_NOEXEC, sc.MS_NOEXEC),
        (_ST_NODIRATIME, sc.MS_NODIRATIME),
        (_ST_NOSYMFOLLOW, sc.MS_NOSYMFOLLOW),
    ):
        if f_flag & st:
            out |= ms
    if f_flag & _ST_NOATIME:
        out |= sc.MS_NOATIME
    elif f_flag & _ST_RELATIME:
        out |= sc.MS_RELATIME
    else:
        out |= sc.MS_STRICTATIME
    return out


def keep_locked(wanted: int, current: int, *, sets_atime: bool) -> int:
    """wanted plus what a user namespace cannot drop from the current mount's flags."""
    out = wanted | (current & LOCKED_FLAGS)
    if not sets_atime:
        out = (out & ~_ATIME_FLAGS) | (current & _ATIME_FLAGS)
    return out
