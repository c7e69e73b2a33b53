"""Installing the v2 device filter on a cgroup directory, replacing the one there before."""

from __future__ import annotations

import errno
import os

from kettle.cgroups.devicefilter import compile_rules
from kettle.errors import SyscallError
from kettle.syscalls import bpf

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from collections.abc import Sequence

    from kettle.cgroups.devices import Rule


def install(cgroup_dir: str, rules: Sequence[Rule]) -> None:
    """Attach a filter for rules to cgroup_dir and detach the programs it replaces.

    Attaching with BPF_F_ALLOW_MULTI keeps filters that parents have (all must allow); the
    old programs attached to this very directory are ours (we created the cgroup), so they go.
    With one old program the swap is atomic (BPF_F_REPLACE); otherwise the new one is attached
    first, so there is no moment without a filter.
    """
    insns = compile_rules(rules)
    try:
        dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, cgroup_dir) from None
    try:
        old_ids, _ = bpf.prog_query(dirfd, cgroup_dir)
        old_fds = [bpf.prog_get_fd_by_id(i) for i in old_ids]
        try:
            prog = bpf.prog_load_cgroup_device(insns)
            try:
                _attach(dirfd, prog, old_fds, cgroup_dir)
            finally:
                os.close(prog)
        finally:
            for fd in old_fds:
                os.close(fd)
    finally:
        os.close(dirfd)


def _attach(dirfd: int, prog: int, old_fds: list[int], path: str) -> None:
    if len(old_fds) == 1:
        try:
            bpf.prog_attach(
                dirfd, prog, bpf.BPF_F_ALLOW_MULTI | bpf.BPF_F_REPLACE, old_fds[0], path
            )
            return
        except SyscallError as e:
            # Kernels before 5.6 lack BPF_F_REPLACE (EINVAL): attach, then detach below.
            if e.errno != errno.EINVAL:
                raise
    bpf.prog_attach(dirfd, prog, bpf.BPF_F_ALLOW_MULTI, 0, path)
    for fd in old_fds:
        try:
            bpf.prog_detach(dirfd, fd, path)
        except SyscallError as e:
            if e.errno != errno.ENOENT:  # already detached by a concurrent update
                raise


def attached(cgroup_dir: str) -> list[int]:
    """Ids of the device programs attached directly to cgroup_dir."""
    try:
        dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, cgroup_dir) from None
    try:
        ids, _ = bpf.prog_query(dirfd, cgroup_dir)
        return ids
    finally:
        os.close(dirfd)
