"""containerd's task API (``containerd.task.v2.Task``, 17 methods) over the shim's containers.

One service instance serves every container of its shim (one container, a pod, or a pool).
Error codes are the ones containerd branches on: NOT_FOUND for an unknown or exited process
(CRI's kill-on-delete depends on it), ALREADY_EXISTS for a duplicate id, FAILED_PRECONDITION
for a call the process's state does not allow, UNIMPLEMENTED for Checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from kettle.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KettleError,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)
from kettle.proto import events_pb, task_pb, wkt
from kettle.shim import log
from kettle.shim.process import CREATED, RUNNING, STOPPED, Container, Process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kettle.shim.backend import RuntimeBackend
    from kettle.shim.config import ShimConfig
    from kettle.shim.events import Publisher
    from kettle.shim.ioloop import IoLoop
    from kettle.shim.oom import OomWatcher
    from kettle.shim.reaper import Reaper
    from kettle.shim.stdio import ProcessIO
    from kettle.ttrpc import Context

    BackendFactory = Callable[[ShimConfig, str], RuntimeBackend]

PROCESS_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
#: how long a `shim start` admission waits for its Create
RESERVATION_S = 60.0
#: how long an exited terminal process may take to hand its last output on
_OUTPUT_DRAIN_S = 2.0

_STATUS = {CREATED: 1, RUNNING: 2, STOPPED: 3}
_PAUSED = 4


def _ts(ns: int) -> Any:
    return wkt.timestamp_from_ns(ns) if ns else None


def _private_pidns(bundle: str) -> bool:
    """Whether config.json gives the container a pid namespace of its own."""
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return True  # the runtime will refuse a missing or broken spec anyway
    for ns in (config.get("linux") or {}).get("namespaces") or ():
        if isinstance(ns, dict) and ns.get("type") == "pid":
            return not ns.get("path")
    return False


class TaskService:
    """The task API.  Handlers are named as ttrpc's register_service expects (snake_case)."""

    def __init__(
        self,
        *,
        namespace: str,
        publisher: Publisher,
        reaper: Reaper,
        loop: IoLoop,
        oom: OomWatcher | None,
        cgroup_v2: bool,
        new_backend: BackendFactory | None = None,
        new_io: Callable[..., ProcessIO] | None = None,
        on_idle: Callable[[bool], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.publisher = publisher
        self.reaper = reaper
        self.loop = loop
        self.oom = oom
        self.cgroup_v2 = cgroup_v2
        self._new_backend = new_backend or self._default_backend
        self._new_io = new_io or self._default_io
        #: called (with Shutdown's `now`) when the shim may have nothing left to serve
        self._on_idle = on_idle or (lambda now: None)
        self._lock = threading.Lock()
        self.containers: dict[str, Container] = {}
        self._creating: set[str] = set()
        #: container id -> monotonic deadline of a `shim start` admission
        self.reservations: dict[str, float] = {}
        self.stopping = False
        #: seconds an idle shim waits for another container (from the latest Create's options)
        self.linger = 0.0
        #: the bundle whose `log` fifo carries the shim's log
        self._log_bundle = ""

    # -- plumbing -----------------------------------------------------------------------------

    def _default_backend(self, cfg: ShimConfig, bundle: str) -> RuntimeBackend:
        from kettle.shim.backend import new_backend

        return new_backend(cfg, self.namespace, self.reaper, bundle)

    def _default_io(self, **kwargs: Any) -> ProcessIO:
        from kettle.shim.stdio import ProcessIO

        return ProcessIO(self.loop, self.reaper, namespace=self.namespace, **kwargs)

    def _container(self, container_id: str) -> Container:
        c = self.containers.get(container_id)
        if c is None or c.init is None:
            raise NotFound(f"container {container_id}: not found")
        return c

    def _process(self, container_id: str, exec_id: str) -> Process:
        c = self._container(container_id)
        if not exec_id:
            assert c.init is not None
            return c.init
        p = c.execs.get(exec_id)
        if p is None:
            raise NotFound(f"process {exec_id} in container {container_id}: not found")
        return p

    def busy(self) -> bool:
        """True while the shim has containers or expects one (the caller holds no lock)."""
        with self._lock:
            return self._busy_locked()

    def _busy_locked(self) -> bool:
        now = time.monotonic()
        for cid, deadline in list(self.reservations.items()):
            if deadline <= now:
                del self.reservations[cid]
        return bool(self.containers or self._creating or self.reservations)

    def begin_stop(self) -> bool:
        """Mark the shim stopping if it is idle; False when it has work (nothing changes)."""
        with self._lock:
            if self.stopping:
                return True
            if self._busy_locked():
                return False
            self.stopping = True
            return True

    # -- admission (kettle.shim.v1.Pool/Admit, from `shim start`) ---------------------------

    def admit(self, payload: bytes, ctx: Context) -> bytes:
        """Reserve a place for a container about to be created here."""
        from kettle.shim.pool import decode_admit

        try:
            container_id, limit = decode_admit(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"admit: malformed request: {e}") from None
        if not container_id:
            raise InvalidArgument("admit: empty container id")
        with self._lock:
            if self.stopping:
                raise Unavailable("shim is shutting down")
            self._busy_locked()  # drop expired reservations
            used = len(self.containers) + len(self._creating) + len(self.reservations)
            if limit and container_id not in self.reservations and used >= limit:
                raise ResourceExhausted(f"shim serves {used} containers (limit {limit})")
            self.reservations[container_id] = time.monotonic() + RESERVATION_S
        self.loop.call_later(RESERVATION_S + 0.1, lambda: self._on_idle(False))
        return b""

    # -- Create -------------------------------------------------------------------------------

    def create(self, req: task_pb.CreateTaskRequest, ctx: Context) -> task_pb.CreateTaskResponse:
        from kettle.runtime.state import validate_id
        from kettle.shim import config as cfgmod

        validate_id(req.id)
        if req.checkpoint or req.parent_checkpoint:
            raise Unimplemented("create from a checkpoint is not supported by the kettle shim")
        if not os.path.isabs(req.bundle):
            raise InvalidArgument(f"bundle {req.bundle!r}: must be an absolute path")
        with self._lock:
            if self.stopping:
                raise Unavailable("shim is shutting down")
            if req.id in self.containers or req.id in self._creating:
                raise AlreadyExists(f"container {req.id}: already exists")
            self._creating.add(req.id)
            self.reservations.pop(req.id, None)
        try:
            cfg = cfgmod.from_environment()
            cfgmod.apply_options(cfg, req.options)
            self.linger = cfg.linger
            c = self._create(req, cfg)
        finally:
            with self._lock:
                self._creating.discard(req.id)
        assert c.init is not None
        io = events_pb.TaskIO(
            stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal
        )
        self.publisher.publish(
            events_pb.TaskCreate(
                container_id=c.id,
                bundle=c.bundle,
                rootfs=list(req.rootfs),
                io=io,
                checkpoint=req.checkpoint,
                pid=c.init.pid,
            )
        )
        return task_pb.CreateTaskResponse(pid=c.init.pid)

    def _create(self, req: task_pb.CreateTaskRequest, cfg: ShimConfig) -> Container:
        from kettle.shim import config as cfgmod
        from kettle.shim import rootfs

        bundle = req.bundle
        cfgmod.write_settings(bundle, cfg, self.namespace)
        backend = self._new_backend(cfg, bundle)
        c = Container(req.id, bundle, cfg, backend, _private_pidns(bundle))
        target = os.path.join(bundle, "rootfs")
        io = self._new_io(
            stdin=req.stdin,
            stdout=req.stdout,
            stderr=req.stderr,
            terminal=req.terminal,
            io_uid=cfg.io_uid,
            io_gid=cfg.io_gid,
            container_id=req.id,
        )
        p = Process(
            c,
            "",
            io,
            stdin=req.stdin,
            stdout=req.stdout,
            stderr=req.stderr,
            terminal=req.terminal,
        )
        created = False
        t0 = time.perf_counter()
        try:
            if req.rootfs:
                rootfs.mount_all(req.rootfs, target)
                c.mounted = target
            io.open()
            t1 = time.perf_counter()
            with self.reaper.hold():
                p.pid = backend.create(req.id, bundle, io.child, io.console_socket)
                created = True
                self.reaper.watch(p.pid, lambda status: self._exited(p, status))
            t2 = time.perf_counter()
            io.started()
        except BaseException:
            io.close()
            if created:
                self.reaper.unwatch(p.pid)
                try:
                    backend.delete(req.id, True)
                except KettleError as e:
                    log.warning(f"create {req.id}: cleanup: {e}")
            if c.mounted:
                try:
                    rootfs.unmount_all(c.mounted)
                except KettleError as e:
                    log.warning(f"create {req.id}: unmount {c.mounted}: {e}")
            raise
        c.init = p
        with self._lock:
            self.containers[c.id] = c
            self._log_bundle = bundle
        log.open_fifo(os.path.join(bundle, "log"))
        log.info(f"created container {c.id} (pid {p.pid}) in {bundle}")
        log.debug(
            f"create {c.id}: rootfs and stdio {(t1 - t0) * 1e3:.1f} ms, runtime "
            f"{(t2 - t1) * 1e3:.1f} ms, total {(time.perf_counter() - t0) * 1e3:.1f} ms"
        )
        return c

    # -- Start --------------------------------------------------------------------------------

    def start(self, req: task_pb.StartRequest, ctx: Context) -> task_pb.StartResponse:
        c = self._container(req.id)
        p = self._process(req.id, req.exec_id)
        with c.lock:
            with p.lock:
                if p.state != CREATED or p.starting:
                    raise FailedPrecondition(
                        f"process {p.id} of container {c.id}: cannot start, it is {p.state}"
                    )
                p.starting = True
            try:
                if p.exec_id:
                    self._start_exec(c, p)
                else:
                    c.backend.start(c.id)
            except BaseException:
                with p.lock:
                    p.starting = False
                if p.exec_id and not p.pid:
                    # It never ran: a Wait on it must not hang until the shim exits.
                    self._finish_exit(p, 255, publish=False)
                raise
            with p.lock:
                if p.state == CREATED:
                    p.state = RUNNING
                if p.exec_id:
                    self.publisher.publish(
                        events_pb.TaskExecStarted(container_id=c.id, exec_id=p.exec_id, pid=p.pid)
                    )
                else:
                    self.publisher.publish(events_pb.TaskStart(container_id=c.id, pid=p.pid))
                p.start_published = True
                p.starting = False
                if p.exit_pending:
                    p.exit_pending = False
                    self._publish_exit(p)
        if not p.exec_id and self.oom is not None:
            self.oom.watch(c.id, p.pid)
        return task_pb.StartResponse(pid=p.pid)

    def _start_exec(self, c: Container, p: Process) -> None:
        from kettle import syscalls as sc

        assert p.spec is not None
        with self.reaper.hold():
            pid = c.backend.exec(c.id, p.exec_id, c.bundle, p.spec, p.io.child, p.io.console_socket)
            p.pid = pid
            try:
                p.pidfd = sc.pidfd_open(pid)
            except KettleError as e:
                log.warning(f"exec {p.exec_id}: pidfd_open {pid}: {e}")
            self.reaper.watch(pid, lambda status: self._exited(p, status))
        p.io.started()

    # -- exits ----------------------------------------------------------------------------------

    def _exited(self, p: Process, status: int) -> None:
        """From the reaper (loop thread): must not block."""
        if p.io.output_done():
            self._finish_exit(p, status)
            return

        def drain() -> None:
            p.io.wait_output(_OUTPUT_DRAIN_S)
            self._finish_exit(p, status)

        threading.Thread(target=drain, name="shim-exit", daemon=True).start()

    def _finish_exit(self, p: Process, status: int, publish: bool = True) -> None:
        with p.lock:
            if p.state == STOPPED:
                return
            p.state = STOPPED
            p.exit_status = status
            p.exited_at = time.time_ns()
            if publish:
                if p.starting and not p.start_published:
                    p.exit_pending = True
                else:
                    self._publish_exit(p)
            p.exited.set()
        log.info(f"process {p.id} of container {p.container.id} exited with status {status}")
        c = p.container
        if not p.exec_id and not c.private_pidns:
            # Without a pid namespace of its own the container's other processes outlive its
            # init; containerd's runc shim kills them, and so does this one.
            threading.Thread(target=self._kill_rest, args=(c,), daemon=True).start()

    def _publish_exit(self, p: Process) -> None:
        self.publisher.publish(
            events_pb.TaskExit(
                container_id=p.container.id,
                id=p.id,
                pid=p.pid,
                exit_status=p.exit_status,
                exited_at=_ts(p.exited_at),
            )
        )

    def _kill_rest(self, c: Container) -> None:
        try:
            c.backend.kill(c.id, signal.SIGKILL, True)
        except KettleError as e:
            log.debug(f"kill the rest of container {c.id}: {e}")

    # -- State / Wait / Connect ------------------------------------------------------------------

    def state(self, req: task_pb.StateRequest, ctx: Context) -> task_pb.StateResponse:
        c = self._container(req.id)
        p = self._process(req.id, req.exec_id)
        with p.lock:
            status = _STATUS[p.state]
            if p.state == RUNNING and c.paused:
                status = _PAUSED
            return task_pb.StateResponse(
                id=c.id,
                bundle=c.bundle,
                pid=p.pid,
                status=status,
                stdin=p.stdin,
                stdout=p.stdout,
                stderr=p.stderr,
                terminal=p.terminal,
                exit_status=p.exit_status,
                exited_at=_ts(p.exited_at),
                exec_id=p.exec_id,
            )

    def wait(self, req: task_pb.WaitRequest, ctx: Context) -> task_pb.WaitResponse:
        p = self._process(req.id, req.exec_id)
        ctx.wait(p.exited)
        return task_pb.WaitResponse(exit_status=p.exit_status, exited_at=_ts(p.exited_at))

    def connect(self, req: task_pb.ConnectRequest, ctx: Context) -> task_pb.ConnectResponse:
        c = self.containers.get(req.id)
        pid = c.init.pid if c is not None and c.init is not None else 0
        return task_pb.ConnectResponse(shim_pid=os.getpid(), task_pid=pid)

    # -- Kill -------------------------------------------------------------------------------------

    def kill(self, req: task_pb.KillRequest, ctx: Context) -> None:
        c = self._container(req.id)
        p = self._process(req.id, req.exec_id)
        if not p.exec_id:
            with p.lock:
                if p.state == STOPPED:
                    raise NotFound(f"container {c.id}: process already finished")
            c.backend.kill(c.id, req.signal, req.all)
            return
        from kettle import syscalls as sc
        from kettle.errors import SyscallError

        with p.lock:
            if p.state == CREATED:
                raise FailedPrecondition(f"process {p.exec_id} of container {c.id}: not started")
            if p.state == STOPPED:
                raise NotFound(f"process {p.exec_id} of container {c.id}: already finished")
            try:
                if p.pidfd >= 0:
                    sc.pidfd_send_signal(p.pidfd, req.signal)
                else:
                    os.kill(p.pid, req.signal)
            except (ProcessLookupError, SyscallError) as e:
                if isinstance(e, SyscallError) and e.errno != 3:  # ESRCH
                    raise
                raise NotFound(
                    f"process {p.exec_id} of container {c.id}: process already finished"
                ) from None

    # -- Delete ---------------------------------------------------------------------------------

    def delete(self, req: task_pb.DeleteRequest, ctx: Context) -> task_pb.DeleteResponse:
        c = self._container(req.id)
        if req.exec_id:
            return self._delete_exec(c, req.exec_id)
        with c.lock:
            return self._delete_init(c)

    def _delete_exec(self, c: Container, exec_id: str) -> task_pb.DeleteResponse:
        p = self._process(c.id, exec_id)
        with p.lock:
            if p.state == RUNNING or p.starting:
                raise FailedPrecondition(f"process {exec_id}: cannot delete a running process")
        c.execs.pop(exec_id, None)
        p.io.close()
        if p.pidfd >= 0:
            os.close(p.pidfd)
            p.pidfd = -1
        if not p.exited.is_set():
            p.exited.set()  # never started: release any Wait on it
        return task_pb.DeleteResponse(
            pid=p.pid, exit_status=p.exit_status, exited_at=_ts(p.exited_at)
        )

    def _delete_init(self, c: Container) -> task_pb.DeleteResponse:
        from kettle.shim import rootfs

        p = c.init
        assert p is not None
        with p.lock:
            state = p.state
        if state == RUNNING:
            raise FailedPrecondition(f"container {c.id}: cannot delete a running process")
        c.backend.delete(c.id, state == CREATED)
        # A created init is killed by delete --force; its exit comes through the reaper.
        if state == CREATED and not p.exited.wait(5.0):
            self._finish_exit(p, 128 + signal.SIGKILL)
        for e in list(c.execs.values()):
            e.io.close()
            if e.pidfd >= 0:
                os.close(e.pidfd)
                e.pidfd = -1
        p.io.close()
        if self.oom is not None:
            self.oom.unwatch(c.id)
        if c.mounted:
            rootfs.unmount_all(c.mounted)
            c.mounted = ""
        with self._lock:
            self.containers.pop(c.id, None)
            others = [o.bundle for o in self.containers.values()]
            moved = self._log_bundle == c.bundle and others
            if moved:
                self._log_bundle = others[-1]
        if moved:
            log.open_fifo(os.path.join(self._log_bundle, "log"))
        self.publisher.publish(
            events_pb.TaskDelete(
                container_id=c.id,
                pid=p.pid,
                exit_status=p.exit_status,
                exited_at=_ts(p.exited_at),
                id=c.id,
            )
        )
        log.info(f"deleted container {c.id}")
        return task_pb.DeleteResponse(
            pid=p.pid, exit_status=p.exit_status, exited_at=_ts(p.exited_at)
        )

    # -- Exec -------------------------------------------------------------------------------------

    def exec(self, req: task_pb.ExecProcessRequest, ctx: Context) -> None:
        c = self._container(req.id)
        if not req.exec_id:
            raise InvalidArgument(f"exec in container {c.id}: empty exec id")
        if req.spec is None or not req.spec.type_url.endswith("runtime-spec/1/Process"):
            got = req.spec.type_url if req.spec is not None else "nothing"
            raise InvalidArgument(f"exec {req.exec_id}: spec must be a {PROCESS_TYPE}, got {got}")
        try:
            spec = json.loads(req.spec.value)
        except ValueError as e:
            raise InvalidArgument(f"exec {req.exec_id}: spec: {e}") from None
        if not isinstance(spec, dict):
            raise InvalidArgument(f"exec {req.exec_id}: spec must be a JSON object")
        spec["terminal"] = req.terminal
        with c.lock:
            assert c.init is not None
            if c.init.state == STOPPED:
                raise FailedPrecondition(f"container {c.id}: cannot exec in a stopped container")
            if req.exec_id in c.execs:
                raise AlreadyExists(f"id {req.exec_id}")
            io = self._new_io(
                stdin=req.stdin,
                stdout=req.stdout,
                stderr=req.stderr,
                terminal=req.terminal,
                io_uid=c.cfg.io_uid,
                io_gid=c.cfg.io_gid,
                container_id=c.id,
            )
            io.open()
            c.execs[req.exec_id] = Process(
                c,
                req.exec_id,
                io,
                stdin=req.stdin,
                stdout=req.stdout,
                stderr=req.stderr,
                terminal=req.terminal,
                spec=spec,
            )
        self.publisher.publish(events_pb.TaskExecAdded(container_id=c.id, exec_id=req.exec_id))

    # -- stdio ------------------------------------------------------------------------------------

    def resize_pty(self, req: task_pb.ResizePtyRequest, ctx: Context) -> None:
        p = self._process(req.id, req.exec_id)
        p.io.resize(req.width, req.height)

    def close_io(self, req: task_pb.CloseIORequest, ctx: Context) -> None:
        p = self._process(req.id, req.exec_id)
        if req.stdin:
            p.io.close_stdin()

    # -- container-wide operations ---------------------------------------------------------------

    def pids(self, req: task_pb.PidsRequest, ctx: Context) -> task_pb.PidsResponse:
        from kettle.proto import runc_options_pb, task_types_pb

        c = self._container(req.id)
        by_pid = {e.pid: e.exec_id for e in list(c.execs.values()) if e.pid}
        out = []
        for pid in c.backend.pids(c.id):
            info = None
            if pid in by_pid:
                info = wkt.pack_any(runc_options_pb.ProcessDetails(exec_id=by_pid[pid]))
            out.append(task_types_pb.ProcessInfo(pid=pid, info=info))
        return task_pb.PidsResponse(processes=out)

    def pause(self, req: task_pb.PauseRequest, ctx: Context) -> None:
        c = self._container(req.id)
        with c.lock:
            self._need_running(c, "pause")
            c.backend.pause(c.id)
            c.paused = True
        self.publisher.publish(events_pb.TaskPaused(container_id=c.id))

    def resume(self, req: task_pb.ResumeRequest, ctx: Context) -> None:
        c = self._container(req.id)
        with c.lock:
            self._need_running(c, "resume")
            c.backend.resume(c.id)
            c.paused = False
        self.publisher.publish(events_pb.TaskResumed(container_id=c.id))

    @staticmethod
    def _need_running(c: Container, verb: str) -> None:
        assert c.init is not None
        if c.init.state != RUNNING:
            raise FailedPrecondition(f"container {c.id}: cannot {verb}, it is {c.init.state}")

    def update(self, req: task_pb.UpdateTaskRequest, ctx: Context) -> None:
        c = self._container(req.id)
        if req.resources is None or not req.resources.type_url.endswith("1/LinuxResources"):
            got = req.resources.type_url if req.resources is not None else "nothing"
            raise InvalidArgument(f"update {c.id}: resources must be {RESOURCES_TYPE}, got {got}")
        try:
            resources = json.loads(req.resources.value)
        except ValueError as e:
            raise InvalidArgument(f"update {c.id}: resources: {e}") from None
        if not isinstance(resources, dict):
            raise InvalidArgument(f"update {c.id}: resources must be a JSON object")
        with c.lock:
            c.backend.update(c.id, resources)

    def stats(self, req: task_pb.StatsRequest, ctx: Context) -> task_pb.StatsResponse:
        from kettle.shim import metrics

        c = self._container(req.id)
        assert c.init is not None
        if c.init.state == STOPPED:
            raise NotFound(f"container {c.id}: not running")
        data = c.backend.stats(c.id)
        return task_pb.StatsResponse(stats=metrics.pack(data, self.cgroup_v2))

    def checkpoint(self, req: task_pb.CheckpointTaskRequest, ctx: Context) -> None:
        raise Unimplemented("checkpoint is not supported by the kettle shim")

    def shutdown(self, req: task_pb.ShutdownRequest, ctx: Context) -> None:
        self._on_idle(req.now)
