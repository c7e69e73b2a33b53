"""bpf(2) for cgroup v2 device filters: load a BPF_PROG_TYPE_CGROUP_DEVICE program, attach it to
a cgroup directory, list and detach the programs attached there.

Only the handful of commands the device filter needs are bound; every failure raises
:class:`kettle.errors.SyscallError` naming the cgroup directory where one is involved.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Final

from kettle.errors import SyscallError
from kettle.syscalls import raw_syscall

BPF_PROG_LOAD: Final = 5
BPF_PROG_ATTACH: Final = 8
BPF_PROG_DETACH: Final = 9
BPF_PROG_GET_FD_BY_ID: Final = 13
BPF_PROG_QUERY: Final = 16

BPF_PROG_TYPE_CGROUP_DEVICE: Final = 15
BPF_CGROUP_DEVICE: Final = 6

BPF_F_ALLOW_OVERRIDE: Final = 1
BPF_F_ALLOW_MULTI: Final = 2
BPF_F_REPLACE: Final = 4

# Room for the verifier's explanation when a load is refused (the kernel truncates to fit).
_LOG_SIZE: Final = 64 * 1024


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """bpf(2); a negative errno on failure, so each caller can name what it acted on."""
    try:
        return raw_syscall("bpf", cmd, ctypes.c_void_p(ctypes.addressof(attr)), len(attr))
    except SyscallError as e:
        return -e.errno


def _attr(fmt: str, *values: int | bytes) -> ctypes.Array[ctypes.c_char]:
    raw = struct.pack(fmt, *values)
    return ctypes.create_string_buffer(raw, len(raw))


def prog_load_cgroup_device(insns: bytes, license: str = "GPL", name: str = "kettle_dev") -> int:
    """Load a cgroup device program; returns its fd.  The verifier's log lands in the error."""
    if len(insns) % 8:
        raise ValueError("bpf instructions must be a multiple of 8 bytes")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    pname = name.encode()[:15]

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        # union bpf_attr, BPF_PROG_LOAD part up to expected_attach_type (72 bytes).
        attr = _attr(
            "=IIQQIIQII16sII",
            BPF_PROG_TYPE_CGROUP_DEVICE,
            len(insns) // 8,
            ctypes.addressof(code),
            ctypes.addressof(lic),
            1 if log is not None else 0,
            len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0,
            0,
            0,
            pname,
            0,
            0,
        )
        return _bpf(BPF_PROG_LOAD, attr)

    fd = attempt(None)
    if fd >= 0:
        return fd
    err = -fd
    # Only a second load with a log buffer says why the verifier refused the program.
    log = ctypes.create_string_buffer(_LOG_SIZE)
    if attempt(log) >= 0:  # pragma: no cover - the kernel changed its mind
        raise SyscallError("bpf", err, detail="BPF_PROG_LOAD cgroup device program")
    text = log.value.decode(errors="replace").strip().splitlines()
    detail = "BPF_PROG_LOAD cgroup device program"
    if text:
        detail += ": verifier: " + " | ".join(text[-3:])
    raise SyscallError("bpf", err, detail=detail)


def prog_attach(
    cgroup_fd: int,
    prog_fd: int,
    flags: int = BPF_F_ALLOW_MULTI,
    replace_fd: int = 0,
    path: str | None = None,
) -> None:
    attr = _attr("=IIIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags, replace_fd)
    ret = _bpf(BPF_PROG_ATTACH, attr)
    if ret < 0:
        raise SyscallError("bpf", -ret, path, "BPF_PROG_ATTACH")


def prog_detach(cgroup_fd: int, prog_fd: int, path: str | None = None) -> None:
    attr = _attr("=IIIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, 0, 0)
    ret = _bpf(BPF_PROG_DETACH, attr)
    if ret < 0:
        raise SyscallError("bpf", -ret, path, "BPF_PROG_DETACH")


def prog_query(cgroup_fd: int, path: str | None = None) -> tuple[list[int], int]:
    """Ids of the device programs attached directly to the cgroup, and the attach flags."""
    capacity = 64
    while True:
        ids = (ctypes.c_uint32 * capacity)()
        attr = _attr(
            "=IIIIQI4x", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), capacity
        )
        ret = _bpf(BPF_PROG_QUERY, attr)
        _, _, _, flags, _, count = struct.unpack("=IIIIQI4x", attr.raw)
        if ret < 0:
            if -ret == 28 and count > capacity:  # ENOSPC: more programs than room; ask again
                capacity = count
                continue
            raise SyscallError("bpf", -ret, path, "BPF_PROG_QUERY")
        return [int(ids[i]) for i in range(count)], flags


def prog_get_fd_by_id(prog_id: int) -> int:
    attr = _attr("=III", prog_id, 0, 0)
    ret = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    if ret < 0:
        raise SyscallError("bpf", -ret, detail=f"BPF_PROG_GET_FD_BY_ID {prog_id}")
    return ret
