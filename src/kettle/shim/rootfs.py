"""Mounting the rootfs containerd describes in Create onto ``<bundle>/rootfs``, and back.

containerd passes its snapshotter's mounts (typically one overlay with lowerdir, upperdir
and workdir options, or a bind) and expects the shim to mount them in order on the bundle's
rootfs directory, and to unmount everything there on Delete and in ``shim delete``.  Option
words mean what they mean for mount(8) and OCI mounts (kettle.runtime.mounts parses both).
"""

from __future__ import annotations

import errno
import os

from kettle import syscalls as sc
from kettle.errors import InvalidArgument, SyscallError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from kettle.proto.mount_pb import Mount

# Linux refuses mount data longer than a page.
_PAGE = 4096


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Mount each in order on target; on failure undo what was mounted and raise."""
    from kettle.runtime.mounts import parse_options

    if not mounts:
        return
    os.makedirs(target, mode=0o711, exist_ok=True)
    done = 0
    try:
        for i, m in enumerate(mounts):
            opts = parse_options(list(m.options), f"rootfs[{i}].options")
            if opts.has_rec_attrs or opts.tmpcopyup:
                raise InvalidArgument(
                    f"rootfs[{i}].options: recursive attributes and tmpcopyup are not "
                    "supported for a container's rootfs"
                )
            if len(opts.data) >= _PAGE:
                raise InvalidArgument(
                    f"rootfs[{i}].options: {len(opts.data)} bytes of mount data exceed a page"
                )
            fstype = m.type or None
            if fstype == "bind":
                fstype = None
            flags = opts.flags
            sc.mount(m.source or None, target, fstype, flags, opts.data or None)
            done += 1
            if opts.needs_remount:
                sc.mount(None, target, None, flags | sc.MS_REMOUNT, opts.data or None)
            for prop in opts.propagation:
                sc.mount(None, target, None, prop)
    except BaseException:
        for _ in range(done):
            try:
                sc.umount2(target, sc.MNT_DETACH)
            except SyscallError:
                break
        raise


def unmount_all(target: str) -> None:
    """Unmount target until nothing is mounted there (containerd's mount.UnmountAll)."""
    for _ in range(64):
        try:
            try:
                sc.umount2(target, 0)
            except SyscallError as e:
                if e.errno != errno.EBUSY:
                    raise
                # Something still uses it (a process being killed): detach it lazily, so the
                # bundle can go now and the kernel frees the mount when the last user leaves.
                sc.umount2(target, sc.MNT_DETACH)
        except SyscallError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return  # not a mount point (any more), or gone
            raise
    raise InvalidArgument(f"unmount {target}: still mounted after 64 unmounts")
