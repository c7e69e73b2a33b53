"""OCI hooks: run each with the container state on stdin, honouring its timeout.

Failure semantics follow the runtime spec: a failing prestart/createRuntime/createContainer/
startContainer hook fails the operation; a failing poststart or poststop hook is logged as a
warning and the remaining hooks still run.
"""

from __future__ import annotations

import os
import time

from kettle.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from kettle.runtime import jsonio as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

if TYPE_CHECKING:
    import signal
else:
    # The C module: signal.py wraps it in enums, which cost ~4 ms on every runtime start.
    import _signal as signal

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
FATAL = frozenset({"prestart", "createRuntime", "createContainer", "startContainer"})


def validate(hooks: Mapping[str, Any] | None) -> None:
    if not hooks:
        return
    for kind, entries in hooks.items():
        if kind not in KINDS:
            raise InvalidArgument(f"hooks.{kind}: unknown hook kind")
        for i, hook in enumerate(entries or ()):
            path = hook.get("path")
            if not isinstance(path, str) or not os.path.isabs(path):
                raise InvalidArgument(f"hooks.{kind}[{i}].path: must be an absolute path")
            timeout = hook.get("timeout")
            if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
                raise InvalidArgument(f"hooks.{kind}[{i}].timeout: must be a positive integer")


def run_one(hook: Mapping[str, Any], state: bytes, where: str) -> None:
    """Run one hook as a child with the state JSON on stdin; raise on failure."""
    path = hook["path"]
    args = list(hook.get("args") or [path])
    env = [str(e) for e in hook.get("env") or ()]
    envd = dict(e.split("=", 1) for e in env if "=" in e)
    timeout = hook.get("timeout")
    rfd, wfd = os.pipe()
    errr, errw = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.dup2(rfd, 0)
            os.dup2(errw, 2)
            os.execve(path, args, envd)
        except OSError as e:
            os.write(2, f"exec {path}: {e.strerror}".lower().encode())
        os._exit(127)
    os.close(rfd)
    os.close(errw)
    try:
        os.write(wfd, state)
    except BrokenPipeError:
        pass  # the hook does not read its stdin: that is its right
    os.close(wfd)
    deadline = None if timeout is None else time.monotonic() + timeout
    status = _wait(pid, deadline)
    err = b""
    while chunk := os.read(errr, 4096):
        err += chunk
        if len(err) > 4096:
            break
    os.close(errr)
    if status is None:
        raise DeadlineExceeded(f"{where}: hook {path} timed out after {timeout}s")
    if status != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        tail = f": {detail[-1]}" if detail else ""
        raise FailedPrecondition(f"{where}: hook {path} exited with status {status}{tail}")


def _wait(pid: int, deadline: float | None) -> int | None:
    """The hook's exit status, or None after killing it at its deadline."""
    while True:
        if deadline is None:
            _, raw = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(raw)
        got, raw = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(raw)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def run(
    hooks: Mapping[str, Any] | None,
    kind: str,
    state: Mapping[str, Any],
    warn: Callable[[str], None] | None = None,
) -> None:
    entries: Sequence[Mapping[str, Any]] = (hooks or {}).get(kind) or ()
    if not entries:
        return
    payload = json.dumps(dict(state)).encode()
    for i, hook in enumerate(entries):
        try:
            run_one(hook, payload, f"{kind} hook #{i}")
        except (FailedPrecondition, DeadlineExceeded) as e:
            if kind in FATAL:
                raise
            if warn is not None:
                warn(str(e))
