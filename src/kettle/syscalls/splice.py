"""splice(2): bytes moved by the kernel from a pipe into a file in one step.

kettled spools a container's output this way: a process killed at any instant leaves each byte
either still in the pipe or already in the file, never in its own memory only.

The standard library binds the call (os.splice, Linux, Python 3.10+), releasing the GIL and
retrying on EINTR; this module adds the error kettle's callers expect, and tells an empty pipe
(EAGAIN, returned as None) apart from the end of the stream (0).
"""

from __future__ import annotations

import errno
import os
from typing import Final

from kettle.errors import SyscallError

SPLICE_F_MOVE: Final = 1
SPLICE_F_NONBLOCK: Final = 2
SPLICE_F_MORE: Final = 4


def splice(
    fd_in: int,
    fd_out: int,
    count: int,
    *,
    offset_out: int | None = None,
    nonblock: bool = False,
    path: str | None = None,
) -> int | None:
    """Move up to `count` bytes from the pipe `fd_in` to `fd_out` (at `offset_out`, leaving
    its file offset alone, when given).  The bytes moved; 0 at the end of the stream (no
    writer left and the pipe empty); None when `nonblock` and the pipe is empty now.
    `path` names the destination in the error."""
    flags = SPLICE_F_NONBLOCK if nonblock else 0
    try:
        return os.splice(fd_in, fd_out, count, offset_dst=offset_out, flags=flags)
    except BlockingIOError:
        if nonblock:
            return None
        raise SyscallError("splice", errno.EAGAIN, path) from None
    except OSError as e:
        raise SyscallError("splice", e.errno or errno.EIO, path) from None
