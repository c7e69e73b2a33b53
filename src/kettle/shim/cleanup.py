"""`shim delete`: clean up after a shim that containerd lost (crashed, or never started).

containerd runs it with the bundle as cwd (and -bundle), then reads a raw protobuf
DeleteResponse from stdout: the init's pid, exit status 137 (it was killed) and the time.
It kills and deletes the container with the runtime it was made with (recorded in the
bundle at Create), and unmounts the rootfs.  Problems go to stderr, which containerd logs as
cleanup warnings; the response is written whatever happened, as the Go shim does.

containerd 1.6 also runs it after every normal task deletion (its connection to the shim
closes), and waits for it: when the runtime has no state for the container and nothing is
mounted on its rootfs, this returns without loading the runtime at all.
"""

from __future__ import annotations

import os
import sys

from kettle.errors import KettleError
from kettle.shim.config import from_environment, read_settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.shim.flags import Flags


def _warn(msg: str) -> None:
    sys.stderr.write(f"{msg}\n")
    sys.stderr.flush()


def _init_pid(bundle: str) -> int:
    try:
        with open(os.path.join(bundle, "init.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _response(pid: int) -> bytes:
    """DeleteResponse{pid 1, exit_status 2 (137: killed), exited_at 3 (now)}, encoded by
    hand: task_pb would import enum and typing, the largest cost of this process, which
    containerd waits for after every task deletion."""
    import time

    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    stamp = b"\x08" + _varint(seconds) + (b"\x10" + _varint(nanos) if nanos else b"")
    body = b"\x10" + _varint(128 + 9) + b"\x1a" + _varint(len(stamp)) + stamp
    return (b"\x08" + _varint(pid) if pid else b"") + body


def run(flags: Flags) -> bytes:
    """Clean up; return the DeleteResponse bytes for stdout."""
    bundle = flags.bundle or os.getcwd()
    try:
        found = read_settings(bundle)
    except KettleError as e:
        _warn(f"{e}; using the defaults")
        found = None
    cfg, namespace = found if found is not None else (from_environment(), flags.namespace)
    namespace = namespace or flags.namespace
    rootfs = os.path.join(bundle, "rootfs")
    state = os.path.join(cfg.runtime_root(namespace), flags.id)
    if os.path.lexists(state):
        from kettle.shim.backend import new_backend
        from kettle.shim.reaper import Reaper

        try:
            new_backend(cfg, namespace, Reaper(), bundle).delete(flags.id, True)
        except KettleError as e:
            _warn(f"delete container {flags.id}: {e}")
    if os.path.ismount(rootfs):
        from kettle.shim import rootfs as rootfs_mod

        try:
            rootfs_mod.unmount_all(rootfs)
        except KettleError as e:
            _warn(f"unmount rootfs of {flags.id}: {e}")
    return _response(_init_pid(bundle))
