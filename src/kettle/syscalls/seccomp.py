"""libseccomp (libseccomp.so.2) through ctypes.

Loaded lazily on first use: most containers' create/start never reach this module's functions
when the spec has no seccomp object, and dlopen of libseccomp is not free.  The constants are
those of libseccomp's seccomp.h (2.5/2.6), which Debian does not install without -dev.

Every libseccomp call returns a negative errno on failure; the wrappers raise
:class:`kettle.errors.SyscallError` with that errno and the libseccomp function's name.
"""

from __future__ import annotations

import ctypes

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Sequence

from kettle.errors import FailedPrecondition, SyscallError

# typing costs ~9 ms at import (re, collections, contextlib); Final is only for the checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# --- actions (seccomp.h) ---------------------------------------------------------------------

ACT_KILL_PROCESS: Final = 0x80000000
ACT_KILL_THREAD: Final = 0x00000000
ACT_KILL: Final = ACT_KILL_THREAD
ACT_TRAP: Final = 0x00030000
ACT_NOTIFY: Final = 0x7FC00000
ACT_LOG: Final = 0x7FFC0000
ACT_ALLOW: Final = 0x7FFF0000
_ACT_ERRNO_BASE: Final = 0x00050000
_ACT_TRACE_BASE: Final = 0x7FF00000


def act_errno(errno: int) -> int:
    return _ACT_ERRNO_BASE | (errno & 0xFFFF)


def act_trace(msg: int) -> int:
    return _ACT_TRACE_BASE | (msg & 0xFFFF)


# --- comparison operators (enum scmp_compare) ------------------------------------------------

CMP_NE: Final = 1
CMP_LT: Final = 2
CMP_LE: Final = 3
CMP_EQ: Final = 4
CMP_GE: Final = 5
CMP_GT: Final = 6
CMP_MASKED_EQ: Final = 7

# --- filter attributes (enum scmp_filter_attr) -----------------------------------------------

FLTATR_ACT_DEFAULT: Final = 1
FLTATR_ACT_BADARCH: Final = 2
FLTATR_CTL_NNP: Final = 3
FLTATR_CTL_TSYNC: Final = 4
FLTATR_API_TSKIP: Final = 5
FLTATR_CTL_LOG: Final = 6
FLTATR_CTL_SSB: Final = 7
FLTATR_CTL_OPTIMIZE: Final = 8
FLTATR_API_SYSRAWRC: Final = 9
#: added in libseccomp 2.6.0; 2.5.x answers EINVAL (unknown attribute).
FLTATR_CTL_WAITKILL: Final = 10

#: seccomp_syscall_resolve_name's answer for a name it does not know.
NR_SCMP_ERROR: Final = -1

#: seccomp_notif_resp.flags: let the syscall run as if no filter had asked (kernel 5.5+).
USER_NOTIF_FLAG_CONTINUE: Final = 1


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class SeccompData(ctypes.Structure):
    """struct seccomp_data (kernel UAPI)."""

    _fields_ = [
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class Notif(ctypes.Structure):
    """struct seccomp_notif (kernel UAPI); the kernel may use a larger one, see notify_alloc."""

    _fields_ = [
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", SeccompData),
    ]


class NotifResp(ctypes.Structure):
    """struct seccomp_notif_resp (kernel UAPI)."""

    _fields_ = [
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """The loaded libseccomp, with prototypes set; FailedPrecondition when it is missing."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        handle = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise FailedPrecondition(
            f"linux.seccomp: libseccomp.so.2 cannot be loaded ({exc}); install libseccomp2"
        ) from None
    vp = ctypes.c_void_p
    handle.seccomp_init.argtypes = [ctypes.c_uint32]
    handle.seccomp_init.restype = vp
    handle.seccomp_release.argtypes = [vp]
    handle.seccomp_release.restype = None
    handle.seccomp_arch_add.argtypes = [vp, ctypes.c_uint32]
    handle.seccomp_arch_add.restype = ctypes.c_int
    handle.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    handle.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    handle.seccomp_arch_native.argtypes = []
    handle.seccomp_arch_native.restype = ctypes.c_uint32
    handle.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    handle.seccomp_syscall_resolve_name.restype = ctypes.c_int
    handle.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    handle.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    handle.seccomp_rule_add_array.argtypes = [
        vp,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    handle.seccomp_rule_add_array.restype = ctypes.c_int
    handle.seccomp_attr_set.argtypes = [vp, ctypes.c_int, ctypes.c_uint32]
    handle.seccomp_attr_set.restype = ctypes.c_int
    handle.seccomp_export_bpf.argtypes = [vp, ctypes.c_int]
    handle.seccomp_export_bpf.restype = ctypes.c_int
    handle.seccomp_load.argtypes = [vp]
    handle.seccomp_load.restype = ctypes.c_int
    handle.seccomp_notify_fd.argtypes = [vp]
    handle.seccomp_notify_fd.restype = ctypes.c_int
    handle.seccomp_version.argtypes = []
    handle.seccomp_version.restype = ctypes.POINTER(_Version)
    handle.seccomp_api_get.argtypes = []
    handle.seccomp_api_get.restype = ctypes.c_uint
    handle.seccomp_notify_alloc.argtypes = [
        ctypes.POINTER(ctypes.POINTER(Notif)),
        ctypes.POINTER(ctypes.POINTER(NotifResp)),
    ]
    handle.seccomp_notify_alloc.restype = ctypes.c_int
    handle.seccomp_notify_free.argtypes = [ctypes.POINTER(Notif), ctypes.POINTER(NotifResp)]
    handle.seccomp_notify_free.restype = None
    handle.seccomp_notify_receive.argtypes = [ctypes.c_int, ctypes.POINTER(Notif)]
    handle.seccomp_notify_receive.restype = ctypes.c_int
    handle.seccomp_notify_respond.argtypes = [ctypes.c_int, ctypes.POINTER(NotifResp)]
    handle.seccomp_notify_respond.restype = ctypes.c_int
    handle.seccomp_notify_id_valid.argtypes = [ctypes.c_int, ctypes.c_uint64]
    handle.seccomp_notify_id_valid.restype = ctypes.c_int
    _lib = handle
    return handle


def _check(call: str, rc: int, detail: str = "") -> int:
    if rc < 0:
        raise SyscallError(call, -rc, detail=detail)
    return rc


def version() -> tuple[int, int, int]:
    v = lib().seccomp_version().contents
    return int(v.major), int(v.minor), int(v.micro)


def api_level() -> int:
    """libseccomp's API level: what this kernel and library can do together (0 = unknown)."""
    return int(lib().seccomp_api_get())


def arch_resolve_name(name: str) -> int:
    """The arch token (an AUDIT_ARCH_* value) for a libseccomp arch name, 0 when unknown."""
    return int(lib().seccomp_arch_resolve_name(name.encode()))


def arch_native() -> int:
    return int(lib().seccomp_arch_native())


def syscall_resolve_name(name: str) -> int:
    """The native syscall number of name, or a negative pseudo number for a syscall that this
    architecture lacks but another has; NR_SCMP_ERROR when libseccomp does not know it."""
    return int(lib().seccomp_syscall_resolve_name(name.encode()))


def syscall_resolve_name_arch(arch: int, name: str) -> int:
    return int(lib().seccomp_syscall_resolve_name_arch(arch, name.encode()))


class Filter:
    """A scmp_filter_ctx; release() it (or use ``with``)."""

    def __init__(self, default_action: int) -> None:
        self._lib = lib()
        ctx = self._lib.seccomp_init(default_action)
        if not ctx:
            # seccomp_init returns NULL both for a bad action and for ENOMEM.
            raise SyscallError("seccomp_init", 22, detail=f"default action {default_action:#x}")
        self._ctx: int | None = ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    @property
    def ctx(self) -> int:
        if self._ctx is None:
            raise SyscallError("seccomp", 9, detail="filter already released")
        return self._ctx

    def release(self) -> None:
        if self._ctx is not None:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None

    def arch_add(self, token: int) -> int:
        """Add an architecture; returns 0, or -EEXIST when the filter already has it."""
        rc = int(self._lib.seccomp_arch_add(self.ctx, token))
        if rc == -17:  # EEXIST: the native arch is in every new filter already
            return rc
        return _check("seccomp_arch_add", rc, f"arch {token:#x}")

    def attr_set(self, attr: int, value: int) -> None:
        _check("seccomp_attr_set", int(self._lib.seccomp_attr_set(self.ctx, attr, value)))

    def rule_add(
        self, action: int, syscall: int, cmps: Sequence[tuple[int, int, int, int]] = ()
    ) -> None:
        """seccomp_rule_add_array; cmps are (arg index, op, datum_a, datum_b)."""
        arr = (ArgCmp * max(len(cmps), 1))()
        for i, (arg, op, a, b) in enumerate(cmps):
            arr[i] = ArgCmp(arg, op, a, b)
        rc = int(self._lib.seccomp_rule_add_array(self.ctx, action, syscall, len(cmps), arr))
        _check("seccomp_rule_add", rc, f"syscall {syscall}")

    def load(self) -> None:
        _check("seccomp_load", int(self._lib.seccomp_load(self.ctx)))

    def export_bpf(self, fd: int) -> None:
        """Write the BPF program seccomp_load would load to fd."""
        _check("seccomp_export_bpf", int(self._lib.seccomp_export_bpf(self.ctx, fd)))

    def notify_fd(self) -> int:
        return _check("seccomp_notify_fd", int(self._lib.seccomp_notify_fd(self.ctx)))


# --- user notification (the listener side) ----------------------------------------------------


class Notification:
    """Buffers for receiving and answering notifications, sized by the kernel."""

    def __init__(self) -> None:
        self._lib = lib()
        self._req = ctypes.POINTER(Notif)()
        self._resp = ctypes.POINTER(NotifResp)()
        rc = int(self._lib.seccomp_notify_alloc(ctypes.byref(self._req), ctypes.byref(self._resp)))
        _check("seccomp_notify_alloc", rc)

    def __enter__(self) -> Notification:
        return self

    def __exit__(self, *_: object) -> None:
        self.free()

    def free(self) -> None:
        if self._req:
            self._lib.seccomp_notify_free(self._req, self._resp)
            self._req = ctypes.POINTER(Notif)()
            self._resp = ctypes.POINTER(NotifResp)()

    def receive(self, fd: int) -> Notif:
        """Block until a notification arrives on fd; the answer is valid until the next call."""
        # The kernel refuses (EINVAL) a buffer that is not zeroed, and libseccomp 2.5.4 does
        # not clear it between calls: without this only the first receive works.
        ctypes.memset(self._req, 0, ctypes.sizeof(Notif))
        _check("seccomp_notify_receive", int(self._lib.seccomp_notify_receive(fd, self._req)))
        return self._req.contents

    def respond(self, fd: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> None:
        """Answer notification notif_id: the syscall returns val, or fails with -error (error is a
        negative errno, as the kernel wants it)."""
        resp = self._resp.contents
        resp.id = notif_id
        resp.val = val
        resp.error = error
        resp.flags = flags
        _check("seccomp_notify_respond", int(self._lib.seccomp_notify_respond(fd, self._resp)))

    def id_valid(self, fd: int, notif_id: int) -> bool:
        return int(self._lib.seccomp_notify_id_valid(fd, notif_id)) == 0
