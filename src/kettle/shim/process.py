"""What the shim knows about each container and each of its processes.

Statuses follow containerd's (created, running, stopped; paused is a container-wide overlay).
Exit statuses arrive from the reaper; every transition happens under the process's lock, and a
process that is being started holds back its TaskExit until its TaskStart (or
TaskExecStarted) has been queued, so consumers always see start before exit.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kettle.shim.backend import RuntimeBackend
    from kettle.shim.config import ShimConfig
    from kettle.shim.stdio import ProcessIO

CREATED = "created"
RUNNING = "running"
STOPPED = "stopped"


class Process:
    __slots__ = (
        "container",
        "exec_id",
        "exit_pending",
        "exit_status",
        "exited",
        "exited_at",
        "io",
        "lock",
        "pid",
        "pidfd",
        "spec",
        "start_published",
        "starting",
        "state",
        "stderr",
        "stdin",
        "stdout",
        "terminal",
    )

    def __init__(
        self,
        container: Container,
        exec_id: str,
        io: ProcessIO,
        *,
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
        terminal: bool = False,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.container = container
        #: "" for the init process
        self.exec_id = exec_id
        self.io = io
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.spec = spec
        self.pid = 0
        #: a pidfd for exec processes, so a signal can never reach a reused pid
        self.pidfd = -1
        self.state = CREATED
        self.exit_status = 0
        #: nanoseconds since the epoch; 0 while running
        self.exited_at = 0
        self.exited = threading.Event()
        self.lock = threading.Lock()
        self.starting = False
        self.start_published = False
        self.exit_pending = False

    @property
    def id(self) -> str:
        """The id TaskExit carries: the container id for the init, else the exec id."""
        return self.exec_id or self.container.id


class Container:
    __slots__ = (
        "backend",
        "bundle",
        "cfg",
        "execs",
        "id",
        "init",
        "lock",
        "mounted",
        "paused",
        "private_pidns",
    )

    def __init__(
        self,
        container_id: str,
        bundle: str,
        cfg: ShimConfig,
        backend: RuntimeBackend,
        private_pidns: bool,
    ) -> None:
        self.id = container_id
        self.bundle = bundle
        self.cfg = cfg
        self.backend = backend
        self.private_pidns = private_pidns
        self.init: Process | None = None
        self.execs: dict[str, Process] = {}
        self.paused = False
        #: rootfs directory the shim mounted (unmounted on delete), or ""
        self.mounted = ""
        #: serialises lifecycle operations (start, exec, pause, resume, delete)
        self.lock = threading.RLock()
