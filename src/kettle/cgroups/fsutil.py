"""Reading and writing cgroupfs files.

Every helper turns OSError into SyscallError carrying the file's path.  The managers call these
through the module (``fsutil.write(...)``) so that unit tests can watch or fake them.
"""

from __future__ import annotations

import errno
import os
import posixpath

from kettle.errors import FailedPrecondition, NotFound, SyscallError

#: What the kernel prints for "no limit" in v2 files and what runc reports for it in stats.
MAX_UINT64 = 2**64 - 1


def _err(call: str, e: OSError, path: str, detail: str = "") -> SyscallError:
    return SyscallError(call, e.errno or errno.EIO, path, detail)


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as e:
        raise _err("read", e, path) from None


def write(path: str, value: str) -> None:
    """One write(2) of value: cgroupfs parses each write on its own."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as e:
        raise _err("open", e, path) from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise _err("write", e, path, f"value {value!r}") from None
    finally:
        os.close(fd)


def mkdir(path: str) -> bool:
    """Create one directory; False when it already existed."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return False
    except OSError as e:
        raise _err("mkdir", e, path) from None
    return True


def rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError as e:
        raise _err("rmdir", e, path) from None


def isdir(path: str) -> bool:
    return os.path.isdir(path)


def exists(path: str) -> bool:
    return os.path.exists(path)


def writable(path: str) -> bool:
    """Whether this process may create cgroups in path (rootless delegation check)."""
    return os.access(path, os.W_OK | os.X_OK)


def subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise _err("scandir", e, path) from None


def read_int(path: str) -> int:
    text = read(path).strip()
    try:
        return int(text)
    except ValueError:
        raise SyscallError("read", errno.EINVAL, path, f"not a number: {text!r}") from None


def read_uint_or_max(path: str) -> int:
    """A v2 value that may be "max"; "max" becomes MAX_UINT64 (as runc reports it)."""
    text = read(path).strip()
    if text == "max":
        return MAX_UINT64
    try:
        return int(text)
    except ValueError:
        raise SyscallError("read", errno.EINVAL, path, f"not a number: {text!r}") from None


def read_keyed(path: str) -> dict[str, int]:
    """A flat-keyed file: lines of "key value" (memory.stat, cpu.stat, memory.events, ...)."""
    out: dict[str, int] = {}
    for line in read(path).splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue  # a non-numeric field (none today): not a counter
    return out


def read_pids(path: str) -> list[int]:
    """The pids in a cgroup.procs file; an empty list when the cgroup is gone."""
    try:
        text = read(path)
    except SyscallError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV):
            return []
        raise
    return [int(x) for x in text.split()]


def write_field(path: str, value: str, what: str, missing: str = "") -> None:
    """write() for a spec field: errors name the field, the file and the value.

    missing explains a file that does not exist (which controller or kernel feature lacks).
    """
    try:
        write(path, value)
    except SyscallError as e:
        if e.errno == errno.ENOENT and e.call == "open":
            parent = posixpath.dirname(path)
            if not isdir(parent):
                raise NotFound(f"{what}: cgroup {parent} does not exist") from None
            why = missing or "this kernel or cgroup does not support it"
            raise FailedPrecondition(f"{what}: {path} does not exist ({why})") from None
        raise SyscallError(e.call, e.errno, e.path, f"{what} = {value!r}") from None
