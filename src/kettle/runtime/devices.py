"""The device nodes and links of a container's /dev.

Nodes are made with mknod where the kernel allows it.  In a user namespace (or rootless) it
does not, so, like runc, the host's node is bind-mounted onto an empty file instead; its
owner and mode are then the host's.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping, Sequence

from kettle import syscalls as sc
from kettle.errors import InvalidArgument, SyscallError
from kettle.runtime import safepath

# Not typing.TYPE_CHECKING, and Device is a plain class, not a dataclass: typing and
# dataclasses cost milliseconds at every start of the runtime.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Final

_TYPES: Final = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
_MAX_MAJOR: Final = (1 << 12) - 1
_MAX_MINOR: Final = (1 << 20) - 1
_MAX_ID: Final = (1 << 32) - 1


class Device:
    """One linux.devices entry, checked (treated as immutable)."""

    __slots__ = ("file_mode", "gid", "major", "minor", "path", "type", "uid")

    def __init__(
        self,
        path: str,
        type: str,
        major: int = 0,
        minor: int = 0,
        file_mode: int = 0o666,
        uid: int = 0,
        gid: int = 0,
    ) -> None:
        self.path = path
        #: "c", "u" (unbuffered char: the same node), "b" or "p"
        self.type = type
        self.major = major
        self.minor = minor
        #: permission bits only
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid

    def _key(self) -> tuple[str, str, int, int, int, int, int]:
        return (self.path, self.type, self.major, self.minor, self.file_mode, self.uid, self.gid)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Device(path={self.path!r}, type={self.type!r}, major={self.major!r}, "
            f"minor={self.minor!r}, file_mode={self.file_mode!r}, uid={self.uid!r}, "
            f"gid={self.gid!r})"
        )

    @property
    def mode(self) -> int:
        return _TYPES[self.type] | self.file_mode

    @property
    def rdev(self) -> int:
        return os.makedev(self.major, self.minor) if self.type != "p" else 0


#: What every container with its own /dev gets (runc's list; /dev/ptmx is a link to pts).
DEFAULT_DEVICES: Final = (
    Device("/dev/null", "c", 1, 3),
    Device("/dev/zero", "c", 1, 5),
    Device("/dev/full", "c", 1, 7),
    Device("/dev/random", "c", 1, 8),
    Device("/dev/urandom", "c", 1, 9),
    Device("/dev/tty", "c", 5, 0),
)


def _int(value: Any, field: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise InvalidArgument(f"{field}: must be an integer from 0 to {top} (got {value!r})")
    return value


def parse_devices(raw: Any, field: str = "linux.devices") -> list[Device]:
    """Check the spec's linux.devices."""
    if raw is None:
        return []
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise InvalidArgument(f"{field}: must be a list")
    out = []
    for i, d in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(d, Mapping):
            raise InvalidArgument(f"{where}: must be an object")
        path = d.get("path")
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise InvalidArgument(f"{where}.path: must be an absolute path ({path!r})")
        clean = posixpath.normpath(path)
        if clean in ("/", "//", "/dev"):
            raise InvalidArgument(f"{where}.path: {path!r} cannot be a device node")
        kind = d.get("type")
        if kind not in _TYPES:
            raise InvalidArgument(f"{where}.type: must be one of c, b, u, p (got {kind!r})")
        major = minor = 0
        if kind != "p":
            if d.get("major") is None or d.get("minor") is None:
                raise InvalidArgument(f"{where}: a {kind} device needs major and minor")
            major = _int(d["major"], f"{where}.major", _MAX_MAJOR)
            minor = _int(d["minor"], f"{where}.minor", _MAX_MINOR)
        raw_mode = d.get("fileMode")
        # runc drops the file type bits a client may have put in fileMode
        mode = 0o666 if raw_mode is None else _int(raw_mode, f"{where}.fileMode", 0o177777) & 0o7777
        uid = 0 if d.get("uid") is None else _int(d["uid"], f"{where}.uid", _MAX_ID)
        gid = 0 if d.get("gid") is None else _int(d["gid"], f"{where}.gid", _MAX_ID)
        out.append(Device(clean, kind, major, minor, mode, uid, gid))
    return out


def with_defaults(spec_devices: Iterable[Device]) -> list[Device]:
    """The default devices, each replaced by a spec device of the same path, then the rest."""
    given = {d.path: d for d in spec_devices}
    out = [given.pop(d.path, d) for d in DEFAULT_DEVICES]
    return out + list(given.values())


def create_devices(root_fd: int, devs: Iterable[Device], *, bind: bool) -> None:
    """Create each node inside the root (fd-first); bind the host's node when bind is set."""
    # Each parent directory is resolved (and made) once, not once per node: most are /dev.
    dirs: dict[str, int] = {}
    old = os.umask(0)  # the spec's fileMode is exact
    try:
        for dev in devs:
            if dev.path == "/dev/ptmx":
                continue  # a link to pts/ptmx (see dev_links) so it matches the devpts instance
            parent, name = posixpath.split(dev.path)
            dir_fd = dirs.get(parent)
            if dir_fd is None:
                dir_fd = dirs[parent] = safepath.mkdir_all_in_root(root_fd, parent)
            _create(root_fd, dir_fd, name, dev, bind)
    finally:
        os.umask(old)
        for fd in dirs.values():
            os.close(fd)


def _create(root_fd: int, dir_fd: int, name: str, dev: Device, bind: bool) -> None:
    if bind and dev.type != "p":  # mkfifo needs no privilege; the others do
        _bind_host_node(root_fd, dev)
        return
    try:
        os.mknod(name, dev.mode, dev.rdev, dir_fd=dir_fd)
    except FileExistsError:
        return  # as runc: what is there stays (an image's own node, a duplicate entry)
    except PermissionError:
        _bind_host_node(root_fd, dev)
        return
    except OSError as e:
        raise SyscallError("mknod", e.errno or errno.EIO, _shown(root_fd, dev.path)) from None
    try:
        os.chown(name, dev.uid, dev.gid, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as e:
        raise SyscallError("chown", e.errno or errno.EIO, _shown(root_fd, dev.path)) from None


def _bind_host_node(root_fd: int, dev: Device) -> None:
    target = safepath.create_file_in_root(root_fd, dev.path, mode=0o666)
    try:
        if not stat.S_ISREG(os.fstat(target).st_mode):
            raise SyscallError("mount", errno.EEXIST, _shown(root_fd, dev.path), "not a file")
        sc.mount(
            dev.path,
            safepath.proc_fd(target),
            None,
            sc.MS_BIND,
            shown=_shown(root_fd, dev.path),
        )
    finally:
        os.close(target)


#: /dev links that every container with its own /dev gets (runc's list)
DEV_LINKS: Final = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


def dev_links(root_fd: int) -> None:
    """fd, stdin, stdout, stderr, core (when the host has /proc/kcore) and ptmx -> pts/ptmx."""
    dev = safepath.open_in_root(root_fd, "/dev", os.O_PATH | os.O_DIRECTORY)
    try:
        links = list(DEV_LINKS)
        # kcore is a kernel build option; a dangling link would only confuse
        if os.path.exists("/proc/kcore"):
            links.append(("core", "/proc/kcore"))
        for name, target in links:
            try:
                os.symlink(target, name, dir_fd=dev)
            except FileExistsError:
                pass  # as runc: an existing entry is kept
            except OSError as e:
                raise SyscallError(
                    "symlink", e.errno or errno.EIO, _shown(root_fd, "/dev/" + name)
                ) from None
        try:
            os.unlink("ptmx", dir_fd=dev)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SyscallError(
                "unlink", e.errno or errno.EIO, _shown(root_fd, "/dev/ptmx")
            ) from None
        try:
            os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
        except OSError as e:
            raise SyscallError(
                "symlink", e.errno or errno.EIO, _shown(root_fd, "/dev/ptmx")
            ) from None
    finally:
        os.close(dev)


def _shown(root_fd: int, path: str) -> str:
    return safepath.shown_path(root_fd, path)
