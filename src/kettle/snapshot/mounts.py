"""Mount descriptions a snapshot hands out, and mounting them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from kettle import syscalls
from kettle.errors import InvalidArgument, ResourceExhausted

#: the kernel copies mount data into one page.
_MAX_DATA = os.sysconf("SC_PAGE_SIZE") - 1


@dataclass(frozen=True)
class Mount:
    """Like an OCI runtime-spec mount (and containerd's): type, source, options."""

    type: str
    source: str
    options: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"type": self.type, "source": self.source, "options": list(self.options)}


_FLAGS = {
    "ro": syscalls.MS_RDONLY,
    "rw": 0,
    "nosuid": syscalls.MS_NOSUID,
    "nodev": syscalls.MS_NODEV,
    "noexec": syscalls.MS_NOEXEC,
    "bind": syscalls.MS_BIND,
    "rbind": syscalls.MS_BIND | syscalls.MS_REC,
}


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Mount a snapshot's mounts on target (one overlay or bind mount in practice)."""
    for m in mounts:
        flags = 0
        data: list[str] = []
        for opt in m.options:
            if opt in _FLAGS:
                flags |= _FLAGS[opt]
            else:
                data.append(opt)
        text = ",".join(data)
        if len(text) > _MAX_DATA:
            raise ResourceExhausted(
                f"mount {target}: {m.type} options are {len(text)} bytes, over a page"
                " (too many layers)"
            )
        if m.type == "bind":
            syscalls.mount(m.source, target, None, flags & ~syscalls.MS_RDONLY)
            if flags & syscalls.MS_RDONLY:
                syscalls.mount(
                    None, target, None, syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY
                )
        elif m.type == "overlay":
            syscalls.mount("overlay", target, "overlay", flags, text)
        else:
            raise InvalidArgument(f"mount {target}: unsupported snapshot mount type {m.type!r}")


def unmount(target: str) -> None:
    syscalls.umount2(target, syscalls.MNT_DETACH)
