"""The shim's log: logrus-style text lines on stderr.

containerd creates a fifo named ``log`` in the bundle, reads it (opened O_RDWR, so it never
sees EOF) and copies it into its own log, which is where the Go shims' messages end up too.
The serving shim points stderr at that fifo; writes never block (a full fifo drops the line
rather than stall the shim).
"""

from __future__ import annotations

import os
import time

_debug = False
_fd = 2


def configure(debug: bool, fd: int = 2) -> None:
    global _debug, _fd
    _debug = debug
    _fd = fd


def open_fifo(path: str) -> bool:
    """Point the log (fd 2) at the `log` fifo containerd reads; False if nobody reads it.

    A shim serving several containers outlives the bundle it was started in; containerd
    stops reading that bundle's fifo when its task goes, so the service moves the log to the
    fifo of a container that is still there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    os.dup2(fd, _fd)
    os.close(fd)
    return True


def _line(level: str, msg: str) -> bytes:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    text = msg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'time="{stamp}.{int(now % 1 * 1e9):09d}Z" level={level} msg="{text}"\n'.encode()


def log(level: str, msg: str) -> None:
    if level == "debug" and not _debug:
        return
    try:
        os.write(_fd, _line(level, msg))
    except OSError:
        pass  # nobody reads the log (containerd gone, or the fifo full): never fail on it


def debug(msg: str) -> None:
    log("debug", msg)


def info(msg: str) -> None:
    log("info", msg)


def warning(msg: str) -> None:
    log("warning", msg)


def error(msg: str) -> None:
    log("error", msg)
