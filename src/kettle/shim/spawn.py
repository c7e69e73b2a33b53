"""Running helper programs (a runc-compatible runtime, containerd's publish command).

subprocess (its C fork/exec helper) rather than os.posix_spawn: glibc's posix_spawn sets the
C library's internal signals (32 and 33) to SIG_IGN in the child, and an ignored disposition
survives exec, so every container below would start with signal 32 ignored.  subprocess also
gives SIGPIPE and SIGXFSZ back their defaults (Python ignores both).  Every child is started
and waited for inside a reaper hold (see reaper.py), so the shim's SIGCHLD loop cannot take
its exit status.
"""

from __future__ import annotations

import os

from kettle.errors import NotFound
from kettle.shim.reaper import Reaper


def which(name: str, path: str | None = None) -> str:
    """A program by path or PATH lookup (NotFound, naming it, when there is none)."""
    if "/" in name:
        if os.access(name, os.X_OK):
            return name
        raise NotFound(f"runtime binary {name} does not exist or is not executable")
    for d in (path if path is not None else os.environ.get("PATH", "")).split(":"):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise NotFound(f"executable file not found in $PATH: {name}")


class Result:
    __slots__ = ("code", "stderr", "stdout")

    def __init__(self, code: int, stdout: bytes, stderr: bytes) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


def run(
    reaper: Reaper,
    argv: list[str],
    *,
    input: bytes | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Run argv to completion.  stdout/stderr not given as fds are captured; input (when no
    stdin fd is given) is written to its stdin, else stdin is /dev/null."""
    import subprocess

    if stdin is None:
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    with reaper.hold():
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE if stderr is None else stderr,
            env=env,
        )
        out, err = proc.communicate(input)
    return Result(
        proc.returncode if proc.returncode >= 0 else 128 - proc.returncode, out or b"", err or b""
    )
