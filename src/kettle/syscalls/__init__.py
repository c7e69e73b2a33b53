"""The one place where Kettle calls libc through ctypes.

Each wrapper raises :class:`kettle.errors.SyscallError` with errno, the call's name and the path
it acted on.  Calls that the standard library already wraps well (os.setresuid, os.mknod,
resource.prlimit, ...) are used from there; only what it lacks lives here.  Submodules bind
other C libraries the same way (``seccomp`` for libseccomp, ``bpf`` for the bpf(2) call).
"""

from __future__ import annotations

import ctypes
import os
import struct

from kettle.errors import SyscallError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

_libc = ctypes.CDLL(None, use_errno=True)

# os.uname rather than platform.machine: platform imports re, ~13 ms per runtime start.
_MACHINE = os.uname().machine

# Raw syscall numbers for the calls glibc 2.36 does not wrap (or wraps with extra policy).
_NR: Final[dict[str, dict[str, int]]] = {
    "x86_64": {
        "pivot_root": 155,
        "setns": 308,
        "ioprio_set": 251,
        "pidfd_send_signal": 424,
        "pidfd_open": 434,
        "close_range": 436,
        "openat2": 437,
        "bpf": 321,
        "capget": 125,
        "capset": 126,
        "keyctl": 250,
        "mount_setattr": 442,
        "seccomp": 317,
    },
    "aarch64": {
        "pivot_root": 41,
        "setns": 268,
        "ioprio_set": 30,
        "pidfd_send_signal": 424,
        "pidfd_open": 434,
        "close_range": 436,
        "openat2": 437,
        "bpf": 280,
        "capget": 90,
        "capset": 91,
        "keyctl": 219,
        "mount_setattr": 442,
        "seccomp": 277,
    },
}


def nr(name: str) -> int:
    """The syscall number of name on this machine's architecture."""
    try:
        return _NR[_MACHINE][name]
    except KeyError:
        raise SyscallError(name, 38, detail=f"no syscall number for {_MACHINE}") from None


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _fail(call: str, path: str | None = None, detail: str = "") -> SyscallError:
    return SyscallError(call, ctypes.get_errno(), path, detail)


def raw_syscall(name: str, *args: int | bytes | ctypes.c_void_p | None) -> int:
    """Call syscall(2) by name; raise SyscallError on -1."""
    ret = int(_syscall(ctypes.c_long(nr(name)), *args))
    if ret == -1:
        raise _fail(name)
    return ret


# --- namespaces ------------------------------------------------------------------------------

CLONE_NEWTIME: Final = 0x00000080
CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000

_libc.unshare.argtypes = [ctypes.c_int]


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail("unshare", detail=hex(flags))


def setns(fd: int, nstype: int = 0, path: str | None = None) -> None:
    if int(_syscall(ctypes.c_long(nr("setns")), ctypes.c_int(fd), ctypes.c_int(nstype))) != 0:
        raise _fail("setns", path)


# --- mounts ----------------------------------------------------------------------------------

MS_RDONLY: Final = 1
MS_NOSUID: Final = 2
MS_NODEV: Final = 4
MS_NOEXEC: Final = 8
MS_SYNCHRONOUS: Final = 16
MS_REMOUNT: Final = 32
MS_MANDLOCK: Final = 64
MS_DIRSYNC: Final = 128
MS_NOSYMFOLLOW: Final = 256
MS_NOATIME: Final = 1024
MS_NODIRATIME: Final = 2048
MS_BIND: Final = 4096
MS_MOVE: Final = 8192
MS_REC: Final = 16384
MS_SILENT: Final = 32768
MS_UNBINDABLE: Final = 1 << 17
MS_PRIVATE: Final = 1 << 18
MS_SLAVE: Final = 1 << 19
MS_SHARED: Final = 1 << 20
MS_RELATIME: Final = 1 << 21
MS_STRICTATIME: Final = 1 << 24
MS_LAZYTIME: Final = 1 << 25

MNT_FORCE: Final = 1
MNT_DETACH: Final = 2
UMOUNT_NOFOLLOW: Final = 8

_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
    *,
    shown: str | None = None,
) -> None:
    """mount(2).  ``shown`` replaces target in the error (for /proc/self/fd/N targets)."""
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        what = shown or target
        detail = f"source {source}" if source and source != fstype else ""
        raise _fail("mount", what, detail)


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        raise _fail("umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    if int(_syscall(ctypes.c_long(nr("pivot_root")), _b(new_root), _b(put_old))) != 0:
        raise _fail("pivot_root", new_root)


AT_EMPTY_PATH: Final = 0x1000
AT_RECURSIVE: Final = 0x8000


def mount_setattr(
    dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int, propagation: int = 0
) -> None:
    """mount_setattr(2) (Linux 5.12): recursive mount attributes such as rro and rnosuid."""
    attr = struct.pack("QQQQ", attr_set, attr_clr, propagation, 0)
    ret = int(
        _syscall(
            ctypes.c_long(nr("mount_setattr")),
            ctypes.c_int(dirfd),
            _b(path),
            ctypes.c_uint(flags),
            ctypes.c_char_p(attr),
            ctypes.c_size_t(len(attr)),
        )
    )
    if ret == -1:
        raise _fail("mount_setattr", path or f"fd {dirfd}")


# --- openat2 ---------------------------------------------------------------------------------

RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08
RESOLVE_IN_ROOT: Final = 0x10


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2); raises SyscallError(ENOSYS) on kernels before 5.6."""
    how = struct.pack("QQQ", flags, mode, resolve)
    fd = int(
        _syscall(
            ctypes.c_long(nr("openat2")),
            ctypes.c_int(dirfd),
            _b(path),
            ctypes.c_char_p(how),
            ctypes.c_size_t(len(how)),
        )
    )
    if fd == -1:
        raise _fail("openat2", path)
    return fd


# --- process attributes ----------------------------------------------------------------------

PR_SET_PDEATHSIG: Final = 1
PR_SET_DUMPABLE: Final = 4
PR_SET_KEEPCAPS: Final = 8
PR_SET_NAME: Final = 15
PR_CAPBSET_READ: Final = 23
PR_CAPBSET_DROP: Final = 24
PR_SET_SECUREBITS: Final = 28
PR_SET_CHILD_SUBREAPER: Final = 36
PR_SET_NO_NEW_PRIVS: Final = 38
PR_GET_NO_NEW_PRIVS: Final = 39
PR_CAP_AMBIENT: Final = 47
PR_CAP_AMBIENT_RAISE: Final = 2
PR_CAP_AMBIENT_CLEAR_ALL: Final = 4

_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = int(_libc.prctl(option, arg2, arg3, arg4, arg5))
    if ret == -1:
        raise _fail("prctl", detail=f"option {option}")
    return ret


_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    if int(_syscall(ctypes.c_long(nr("capget")), ctypes.byref(hdr), ctypes.byref(data))) != 0:
        raise _fail("capget")
    eff = data[0].effective | (data[1].effective << 32)
    perm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, perm, inh


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    mask = 0xFFFFFFFF
    data[0] = _CapData(effective & mask, permitted & mask, inheritable & mask)
    data[1] = _CapData(effective >> 32, permitted >> 32, inheritable >> 32)
    if int(_syscall(ctypes.c_long(nr("capset")), ctypes.byref(hdr), ctypes.byref(data))) != 0:
        raise _fail("capset")


_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        raise _fail("sethostname", detail=name)


def setdomainname(name: str) -> None:
    raw = name.encode()
    if _libc.setdomainname(raw, len(raw)) != 0:
        raise _fail("setdomainname", detail=name)


_libc.personality.argtypes = [ctypes.c_ulong]


def personality(persona: int) -> int:
    ret = int(_libc.personality(persona))
    if ret == -1:
        raise _fail("personality", detail=hex(persona))
    return ret


IOPRIO_WHO_PROCESS: Final = 1


def ioprio_set(ioclass: int, priority: int, pid: int = 0) -> None:
    value = (ioclass << 13) | priority
    ret = int(
        _syscall(
            ctypes.c_long(nr("ioprio_set")),
            ctypes.c_int(IOPRIO_WHO_PROCESS),
            ctypes.c_int(pid),
            ctypes.c_int(value),
        )
    )
    if ret == -1:
        raise _fail("ioprio_set")


# --- file descriptors and processes ----------------------------------------------------------

CLOSE_RANGE_CLOEXEC: Final = 4


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2); falls back to walking /proc/self/fd on kernels before 5.9."""
    ret = int(
        _syscall(
            ctypes.c_long(nr("close_range")),
            ctypes.c_uint(first),
            ctypes.c_uint(last),
            ctypes.c_uint(flags),
        )
    )
    if ret == 0:
        return
    # ENOSYS: a kernel before 5.9; EPERM: a seccomp profile written before close_range existed.
    if ctypes.get_errno() not in (38, 1):
        raise _fail("close_range")
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if first <= fd <= last:
            if flags & CLOSE_RANGE_CLOEXEC:
                os.set_inheritable(fd, False)
            else:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the fd of the listdir itself is already gone


SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_FILTER_FLAG_TSYNC: Final = 1
SECCOMP_FILTER_FLAG_LOG: Final = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW: Final = 4


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def seccomp_set_filter(program: bytes, flags: int) -> None:
    """seccomp(SECCOMP_SET_MODE_FILTER): load a classic BPF program (8 bytes an instruction)
    into the calling thread, as libseccomp's seccomp_load would after generating it."""
    prog = _SockFprog(len(program) // 8, program)
    ret = int(
        _syscall(
            ctypes.c_long(nr("seccomp")),
            ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
            ctypes.c_uint(flags),
            ctypes.byref(prog),
        )
    )
    if ret == -1:
        raise _fail("seccomp", detail=f"{len(program) // 8} instructions, flags {flags:#x}")


def pidfd_open(pid: int) -> int:
    fd = int(_syscall(ctypes.c_long(nr("pidfd_open")), ctypes.c_int(pid), ctypes.c_uint(0)))
    if fd == -1:
        raise _fail("pidfd_open", detail=f"pid {pid}")
    return fd


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    ret = int(
        _syscall(
            ctypes.c_long(nr("pidfd_send_signal")),
            ctypes.c_int(pidfd),
            ctypes.c_int(sig),
            None,
            ctypes.c_uint(0),
        )
    )
    if ret == -1:
        raise _fail("pidfd_send_signal", detail=f"signal {sig}")


KEYCTL_JOIN_SESSION_KEYRING: Final = 1


def join_session_keyring(name: str) -> int:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING, name): a new session keyring for the container."""
    ret = int(
        _syscall(ctypes.c_long(nr("keyctl")), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), _b(name))
    )
    if ret == -1:
        raise _fail("keyctl", detail="join session keyring")
    return ret


def libc_version() -> str:
    _libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return str(_libc.gnu_get_libc_version().decode())
