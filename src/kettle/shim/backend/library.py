"""The Kettle runtime library, called in the shim's own process.

``create`` and ``exec`` give the new process the caller's fds 0, 1 and 2, and fork on their
own; the shim runs them in a forked helper that first puts the process's stdio on 0/1/2, so
the shim's own descriptors are never swapped under its other threads.  The helper is a plain
fork of the running shim (no interpreter start, nothing to import).  The other operations
run in-process.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import threading

from kettle.errors import FailedPrecondition, Internal, KettleError, NotFound
from kettle.shim.reaper import Reaper, wait_child

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kettle.runtime.seccomp import Programs
    from kettle.shim.config import ShimConfig

# Python ignores these at start-up and an ignored disposition survives exec: the container's
# processes, forked from the shim, must get the defaults back.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

# lifecycle.start() changes the working directory while it connects to the container's
# exec.sock (a short relative name keeps it under the sun_path limit); one at a time.
_START_LOCK = threading.Lock()


def _gone(exc: KettleError) -> bool:
    return isinstance(exc, NotFound) or (
        isinstance(exc, FailedPrecondition) and "not running" in str(exc)
    )


class LibraryBackend:
    def __init__(self, cfg: ShimConfig, root: str, reaper: Reaper) -> None:
        from kettle.runtime.context import Context, Logger
        from kettle.runtime.seccomp import Programs

        self.cfg = cfg
        self.root = root
        self.reaper = reaper
        # Runtime warnings (hook failures and the like) go to the shim's log, never to fd 2
        # of a helper, which is the container's stderr by then.
        logger = Logger(_shim_log_stream())
        global _programs
        if _programs is None:
            _programs = Programs(in_memory=True)
        # Compiled seccomp programs stay in the shim's memory, shared by its containers (a
        # backend is made per container): each profile is compiled once per shim, and
        # nothing is left in the state root (see _compile_seccomp).
        self.ctx = Context(
            root,
            logger=logger,
            systemd_cgroup=cfg.systemd_cgroup,
            seccomp_programs=_programs,
        )

    def _compile_seccomp(self, bundle: str) -> None:
        """Compile the bundle's seccomp profile here, before the helper forks: what a helper
        compiles is lost with it.  A profile that cannot be compiled is left for the helper's
        create or exec to refuse, with the spec field named."""
        from kettle.runtime import jsonio

        try:
            with open(os.path.join(bundle, "config.json"), "rb") as f:
                seccomp = (jsonio.loads(f.read()).get("linux") or {}).get("seccomp")
            self.ctx.seccomp_programs.get(seccomp)
        except (OSError, ValueError, AttributeError, KettleError):
            pass  # the runtime reads the same file and reports the problem itself

    # -- forked helpers ------------------------------------------------------------------

    def _in_helper(self, stdio: list[int | None], body: Callable[[], int]) -> int:
        """Run body in a forked child whose fds 0/1/2 are stdio; return the pid it reports."""
        r, w = os.pipe()
        with self.reaper.hold():
            pid = os.fork()
            if pid == 0:  # helper
                os.close(r)
                _helper_main(w, stdio, body)
            os.close(w)
            chunks = []
            try:
                # One line, not EOF: the container's init is a fork of the helper and keeps
                # a copy of the write end until it execs (at start).
                while data := os.read(r, 65536):
                    chunks.append(data)
                    if data.endswith(b"\n"):
                        break
            finally:
                os.close(r)
                wait_child(pid)
        if not chunks:
            raise Internal("runtime helper exited without a result")
        result = json.loads(b"".join(chunks))
        if "pid" in result:
            return int(result["pid"])
        from kettle.runtime.create import error_from_child

        raise error_from_child(result)

    # -- RuntimeBackend ------------------------------------------------------------------

    def create(
        self,
        container_id: str,
        bundle: str,
        stdio: list[int | None],
        console_socket: str | None,
    ) -> int:
        from kettle.runtime.create import CreateOptions, create

        opts = CreateOptions(
            bundle,
            console_socket=console_socket,
            pid_file=os.path.join(bundle, "init.pid"),
            no_pivot=self.cfg.no_pivot_root,
            no_new_keyring=self.cfg.no_new_keyring,
        )
        self._compile_seccomp(bundle)
        return self._in_helper(stdio, lambda: create(self.ctx, container_id, opts).pid)

    def start(self, container_id: str) -> None:
        from kettle.runtime import lifecycle

        with _START_LOCK, self.reaper.hold():
            lifecycle.start(self.ctx, container_id)

    def kill(self, container_id: str, sig: int, all_processes: bool) -> None:
        from kettle.runtime import lifecycle

        try:
            lifecycle.kill(self.ctx, container_id, sig, all_processes=all_processes)
        except KettleError as e:
            if _gone(e):
                raise NotFound(f"container {container_id}: process already finished") from None
            raise

    def delete(self, container_id: str, force: bool) -> None:
        from kettle.runtime import lifecycle

        with self.reaper.hold():  # poststop hooks fork and wait
            try:
                lifecycle.delete(self.ctx, container_id, force=force)
            except NotFound:
                pass  # already gone: what delete is for

    def exec(
        self,
        container_id: str,
        exec_id: str,
        bundle: str,
        process: dict[str, Any],
        stdio: list[int | None],
        console_socket: str | None,
    ) -> int:
        from kettle.runtime.execute import ExecOptions, execute

        opts = ExecOptions(
            process,
            detach=True,
            pid_file=os.path.join(bundle, f"{exec_id}.pid"),
            console_socket=console_socket,
        )
        self._compile_seccomp(bundle)
        return self._in_helper(stdio, lambda: execute(self.ctx, container_id, opts))

    def pause(self, container_id: str) -> None:
        from kettle.runtime import lifecycle

        lifecycle.pause(self.ctx, container_id)

    def resume(self, container_id: str) -> None:
        from kettle.runtime import lifecycle

        lifecycle.resume(self.ctx, container_id)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        from kettle.runtime import lifecycle

        lifecycle.update(self.ctx, container_id, resources)

    def pids(self, container_id: str) -> list[int]:
        from kettle.runtime import lifecycle

        return lifecycle.pids(self.ctx, container_id)

    def stats(self, container_id: str) -> dict[str, Any]:
        from kettle.runtime import lifecycle

        try:
            return lifecycle.stats(self.ctx, container_id)
        except KettleError as e:
            if _gone(e):
                raise NotFound(f"container {container_id}: not running") from None
            raise


_log_stream: Any = None
_programs: Programs | None = None


def _shim_log_stream() -> Any:
    """One text stream on (a copy of) the shim's stderr, shared by every container."""
    global _log_stream
    if _log_stream is None:
        _log_stream = os.fdopen(os.dup(2), "w")
    return _log_stream


def _helper_main(w: int, stdio: list[int | None], body: Callable[[], int]) -> None:
    """The forked helper: never returns, never raises, reports through w."""
    code = 1
    try:
        # What the shim set up for itself must not reach the container: signal handlers
        # (and their wake-up fd), and the signals Python ignores.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        for sig in RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # Nothing may free (and close) a Python file object from here on: its fd number may
        # by then belong to something the runtime opened.
        gc.disable()
        null = -1
        for target, fd in enumerate(stdio):
            if fd is None:
                if null < 0:
                    null = os.open(os.devnull, os.O_RDWR)
                fd = null
            os.dup2(fd, target)
        # The helper is a fork of the whole shim: every descriptor of every other container
        # (their stdio fifos above all) would otherwise live on in this container's init
        # until it execs, and a client would wait for EOF on them.
        keep = {0, 1, 2, w, _log_stream.fileno() if _log_stream is not None else -1}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listing's own directory fd, closed already
        result: dict[str, Any] = {"pid": body()}
        code = 0
    except KettleError as e:
        result = {"code": e.code, "msg": str(e)}
    except BaseException as e:  # report anything: the shim turns it into an error reply
        result = {"code": "INTERNAL", "msg": f"{type(e).__name__}: {e}"}
    try:
        os.write(w, json.dumps(result).encode() + b"\n")
    finally:
        os._exit(code)
