"""What every runtime operation needs: the state root, the cgroup driver choice, a logger."""

from __future__ import annotations

import os
import sys

from kettle.runtime.state import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

    from kettle.runtime.seccomp import Programs

DEFAULT_ROOT = "/run/kettle-runtime"


def default_root() -> str:
    if os.geteuid() == 0:
        return DEFAULT_ROOT
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "kettle-runtime")
    return f"/tmp/kettle-runtime-{os.geteuid()}"


def now_rfc3339(nano: bool = True) -> str:
    # time rather than datetime: datetime costs ~1.4 ms to import on every runtime start.
    import time

    ns = time.time_ns()
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    return f"{base}.{ns % 1_000_000_000:09d}Z" if nano else f"{base}Z"


class Logger:
    """runc-style log: text or one JSON object a line, to --log or stderr."""

    def __init__(self, stream: IO[str] | None = None, json_format: bool = False) -> None:
        self.stream = stream
        self.json_format = json_format
        self.debug_enabled = False
        self.to_stderr_too = False

    def log(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug_enabled:
            return
        out = self.stream or sys.stderr
        if self.json_format:
            from kettle.runtime import jsonio as json

            line = json.dumps({"level": level, "msg": msg, "time": now_rfc3339(False)})
        else:
            line = f'time="{now_rfc3339(False)}" level={level} msg="{msg}"'
        try:
            out.write(line + "\n")
            out.flush()
        except OSError:
            pass  # a closed log must not turn a success into a failure

    def debug(self, msg: str) -> None:
        self.log("debug", msg)

    def warning(self, msg: str) -> None:
        self.log("warning", msg)

    def error(self, msg: str) -> None:
        self.log("error", msg)


class Context:
    def __init__(
        self,
        root: str,
        logger: Logger | None = None,
        systemd_cgroup: bool = False,
        rootless: bool = False,
        seccomp_programs: Programs | None = None,
    ) -> None:
        self.root = root
        self.logger = logger or Logger()
        self.systemd_cgroup = systemd_cgroup
        self.rootless = rootless
        self._programs = seccomp_programs

    @property
    def seccomp_programs(self) -> Programs:
        """Where compiled seccomp programs are kept: given by a long-lived caller, else a
        directory in the state root (not a valid container id, so never listed)."""
        if self._programs is None:
            from kettle.runtime.seccomp import CACHE_DIR, Programs

            self._programs = Programs(os.path.join(self.root, CACHE_DIR))
        return self._programs

    @property
    def store(self) -> Store:
        return Store(self.root)
