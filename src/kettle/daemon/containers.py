"""Containers: metadata, bundles, shims and logs, driven the way containerd drives a shim."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal as _signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kettle.api.convert import from_dict, to_dict
from kettle.daemon import health, logs, shim, stdio, users
from kettle.daemon import spec as specmod
from kettle.daemon.store import CREATED, EXITED, PAUSED, RESTARTING, RUNNING, Record, Store
from kettle.daemon.supervisor import Supervisor
from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, NotFound
from kettle.proto import any_pb, empty_pb, mount_pb, task_pb, task_types_pb
from kettle.proto._wire import Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.api.kettle_pb import CreateContainerRequest, LogsRequest, RestartPolicy
    from kettle.daemon.bus import EventBus
    from kettle.daemon.config import Config
    from kettle.image.service import ImageService

log = logging.getLogger("kettled")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_STOP_DEFAULT_S = 10
_EXIT_LOST = 255
_COPIER_DRAIN_S = 5.0
_RESOURCES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


@dataclass
class Live:
    """A started container's task, log copiers and exit."""

    task: shim.Task
    io: stdio.ContainerIO
    exited: threading.Event = field(default_factory=threading.Event)
    log_done: threading.Event = field(default_factory=threading.Event)
    #: set before `exited`: Wait answers with it even once an auto-remove has run.
    exit_code: int = 0


def parse_signal(text: str) -> int:
    if not text:
        return int(_signal.SIGKILL)
    if text.isdigit():
        num = int(text)
        if not 0 < num < 65:
            raise InvalidArgument(f"signal {text}: out of range")
        return num
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"signal {text!r}: unknown") from None


class Containers:
    def __init__(
        self, config: Config, images: ImageService, events_address: str, bus: EventBus
    ) -> None:
        self.config = config
        root = self.root = config.root
        state = self.state = config.state
        namespace = self.namespace = config.namespace
        self.images = images
        self.events_address = events_address
        self.bus = bus
        self.store = Store(os.path.join(root, "kettled.db"))
        self.supervisor = Supervisor(self)
        self.health = health.HealthMonitor(
            health.exec_runner(self), self._health_changed, self._health_saved
        )
        self.health.start()
        #: every shim address this kettled has used (released when it stops).
        self._shims: set[str] = set()
        #: cid -> its resolved check (None: none), for the failure action.
        self._checks: dict[str, health.CheckConfig] = {}
        self._live: dict[str, Live] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        os.makedirs(os.path.join(root, "containers"), mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(state, namespace), mode=0o711, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------

    def bundle(self, cid: str) -> str:
        return os.path.join(self.state, self.namespace, cid)

    def log_path(self, cid: str) -> str:
        return os.path.join(self.root, "containers", cid, f"{cid}-json.log")

    def _lock(self, cid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(cid, threading.Lock())

    # -- create --------------------------------------------------------------------------------

    def create(self, req: CreateContainerRequest) -> Record:
        from kettle.daemon import policy

        restart = policy.policy_of(req.restart)
        policy.check_auto_remove(restart, req.auto_remove)
        policy.backoff_params(req.restart, policy.BackoffParams())
        logs.validate_log_opts(dict(req.log_opts))
        image = self.images.get(req.image)
        config = self.images.config(image)
        cid = secrets.token_hex(32)
        name = req.name or f"kettle_{cid[:12]}"
        if not _NAME.match(name):
            raise InvalidArgument(f"container name {name!r}: use letters, digits, _ . -")
        rec = Record(
            id=cid,
            name=name,
            image=image.name,
            spec="{}",
            created_ns=time.time_ns(),
            labels=dict(req.labels),
            auto_remove=req.auto_remove,
            config=json.dumps(to_dict(req)),
            group=req.group,
        )
        self.store.add(rec)  # claims the name first
        bundle = self.bundle(cid)
        try:
            mounts = self.images.prepare_rootfs(image, cid)
            user = users.resolve(req.user or config.user, users.layer_dirs(mounts))
            vols = specmod.volume_store(self.root)
            spec = specmod.build(
                self.namespace, cid, req.hostname or cid[:12], config, req, user, vols
            )
            rec.spec = json.dumps(spec)
            os.makedirs(bundle, mode=0o711)
            os.makedirs(os.path.dirname(self.log_path(cid)), mode=0o700)
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(spec, f)
            with open(os.path.join(bundle, "rootfs.json"), "w") as f:
                json.dump([m.to_json() for m in mounts], f)
            os.mkdir(os.path.join(bundle, "rootfs"), 0o755)
            self.store.update(rec)
        except BaseException:
            self._discard(cid)
            try:
                specmod.volume_store(self.root).remove_anonymous_of(cid)
            except (KettleError, OSError) as e:
                log.error("container %s: anonymous volumes: %s", cid, e)
            raise
        log.info("created container %s (%s) from %s", cid, name, image.name)
        self.publish(rec, "create")
        return rec

    def publish(self, rec: Record, action: str, **extra: str) -> None:
        attrs = {"name": rec.name, "image": rec.image, **rec.labels, **extra}
        self.bus.publish("container", action, rec.id, attrs)

    # -- start ---------------------------------------------------------------------------------

    def start(self, ref: str) -> Record:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec = self.store.find(rec.id)
            if rec.status in (RUNNING, PAUSED):
                raise FailedPrecondition(f"container {rec.id} is already running")
            self.supervisor.cancel(rec.id)
            self._start(rec)
        return rec

    def _rootfs(self, cid: str) -> list[mount_pb.Mount]:
        with open(os.path.join(self.bundle(cid), "rootfs.json")) as f:
            raw = json.load(f)
        return [
            mount_pb.Mount(type=m["type"], source=m["source"], options=list(m["options"]))
            for m in raw
        ]

    def _start(self, rec: Record, by_policy: bool = False) -> None:
        """Run the container (again).  A start by the user begins a new restart history."""
        if not by_policy:
            rec.restart_count = 0
            rec.streak = 0
        rec.next_restart_ns = 0
        bundle = self.bundle(rec.id)
        task: shim.Task | None = None
        io = self._io(rec)
        live: Live | None = None
        try:
            io.open()
            address = shim.start(
                self.namespace, self.events_address, rec.id, bundle, self.config.runtime
            )
            with self._guard:
                self._shims.add(address)
            task = shim.Task(address, self.namespace, rec.id)
            task.create(bundle, self._rootfs(rec.id), io)
            live = Live(task, io)
            io.start()
            rec.pid = task.start()
        except BaseException:
            io.close()
            if task is not None:
                self._abandon(task, live)
            io.writer.close()
            raise
        rec.status = RUNNING
        rec.shim_address = address
        rec.started_ns = time.time_ns()
        rec.exit_code = 0
        rec.finished_ns = 0
        rec.stopped_by_user = False
        rec.oom_killed = False
        self.store.update(rec)
        self._watch(rec.id, live)
        self._watch_health(rec, fresh=True)
        log.info("started container %s, pid %d", rec.id, rec.pid)
        self.publish(rec, "start")

    # -- health checks -------------------------------------------------------------------------

    def _check_of(self, rec: Record) -> health.CheckConfig | None:
        req = self.request(rec)
        image_check = None
        try:
            image_check = self.images.config(self.images.get(rec.image)).healthcheck
        except KettleError:
            pass  # the image was removed since: only the container's own flags apply
        return health.resolve(req.health, image_check)

    def _watch_health(self, rec: Record, fresh: bool) -> None:
        """Check a running container (fresh: a new run, "starting" again; else go on from the
        state kept in its record, as after a daemon restart or an unpause)."""
        try:
            check = self._check_of(rec)
        except KettleError as e:
            log.error("container %s: health check: %s", rec.id, e)
            return
        if check is None:
            return
        kept = health.HealthState.from_json(rec.health)
        state = health.on_start(kept) if fresh else kept
        with self._guard:
            self._checks[rec.id] = check
        state = self.health.watch(rec.id, check, rec.started_ns, state=state)
        self.store.set_health(rec.id, state.to_json())

    def _unwatch_health(self, cid: str) -> None:
        self.health.unwatch(cid)

    def _health_saved(self, cid: str, state: health.HealthState) -> None:
        self.store.set_health(cid, state.to_json())

    def _health_changed(self, cid: str, state: health.HealthState, old: str) -> None:
        rec = self.store.get(cid)
        if rec is None:
            return
        self.publish(rec, f"health_status: {state.status}")
        with self._guard:
            check = self._checks.get(cid)
        action = None if check is None else health.failure_action(check, old, state.status)
        if action is not None:
            # Not on the check's thread: a restart waits for this very container to exit.
            threading.Thread(
                target=self._health_action, args=(cid, action), name="health-action", daemon=True
            ).start()

    def _health_action(self, cid: str, action: str) -> None:
        log.warning("container %s is unhealthy: %s (--health-on-failure)", cid, action)
        try:
            if action == "restart":
                self.restart(cid, -1)
            elif action == "kill":
                live = self.live(cid)
                if live is not None:
                    live.task.kill(int(_signal.SIGKILL), all_=True)
        except KettleError as e:
            log.error("container %s: --health-on-failure %s: %s", cid, action, e)

    def _io(self, rec: Record) -> stdio.ContainerIO:
        req = self.request(rec)
        writer = logs.open_writer(self.log_path(rec.id), dict(req.log_opts), self.config)
        return stdio.ContainerIO(self.bundle(rec.id), writer, req.open_stdin, req.tty)

    @staticmethod
    def request(rec: Record) -> CreateContainerRequest:
        """The create request the container was made from."""
        from kettle.api.kettle_pb import CreateContainerRequest

        return from_dict(CreateContainerRequest, json.loads(rec.config))

    def _abandon(self, task: shim.Task, live: Live | None) -> None:
        """After a failed Create or Start: delete the task (the shim kills a created init and
        unmounts the rootfs) and let the shim go, then let the copiers see EOF."""
        try:
            task.delete()
            task.shutdown()
        except KettleError as e:
            log.error("container %s: cleanup after a failed start: %s", task.id, e)
        finally:
            task.close()
        if live is not None:
            live.io.wait_drained(_COPIER_DRAIN_S)

    def _watch(self, cid: str, live: Live) -> None:
        with self._guard:
            self._live[cid] = live
        threading.Thread(target=self._waiter, args=(cid, live), daemon=True).start()

    def _waiter(self, cid: str, live: Live) -> None:
        lost = False
        try:
            code = live.task.wait()
        except KettleError as e:
            log.error("container %s: lost its shim: %s", cid, e)
            code, lost = _EXIT_LOST, True
        live.io.wait_drained(_COPIER_DRAIN_S)
        live.io.writer.close()
        live.log_done.set()
        try:
            live.task.delete()
            live.task.shutdown()
        except KettleError as e:
            log.error("container %s: delete task: %s", cid, e)
        live.task.close()
        self._unwatch_health(cid)
        rec = self._record_exit(cid, code, lost)
        with self._guard:
            self._live.pop(cid, None)
        # Decided before `exited` is set: a stop or restart waiting on it then finds the
        # container either exited or restarting, never in between.
        if rec is not None and not rec.auto_remove:
            try:
                self.supervisor.exited(rec)
            except KettleError as e:
                log.error("container %s: restart policy: %s", cid, e)
        live.exit_code = code
        live.exited.set()
        log.info("container %s exited with status %d", cid, code)
        if rec is not None and rec.auto_remove:
            try:
                self.remove(cid, force=True)
            except KettleError as e:
                log.error("container %s: auto-remove: %s", cid, e)

    def _record_exit(self, cid: str, code: int, lost: bool = False) -> Record | None:
        rec = self.store.get(cid)
        if rec is None:
            return None
        rec.status = EXITED
        rec.exit_code = code
        rec.finished_ns = time.time_ns()
        rec.pid = 0
        if lost:
            rec.last_exit_reason = "lost"
        elif rec.oom_killed:
            rec.last_exit_reason = "oom"
        elif code > 128:
            rec.last_exit_reason = "signal"
        else:
            rec.last_exit_reason = "exit"
        self.store.update(rec)
        self.publish(rec, "die", exitCode=str(code), reason=rec.last_exit_reason)
        return rec

    def mark_oom(self, cid: str) -> None:
        """The shim saw the container's cgroup OOM-kill a process."""
        rec = self.store.get(cid)
        if rec is None:
            return
        rec.oom_killed = True
        if rec.status != RUNNING and rec.last_exit_reason == "signal":
            # The event came after Wait had already told of the exit.
            rec.last_exit_reason = "oom"
        self.store.update(rec)
        self.publish(rec, "oom")

    # -- signals -------------------------------------------------------------------------------

    def _running(self, ref: str) -> tuple[Record, Live]:
        rec = self.store.find(ref)
        with self._guard:
            live = self._live.get(rec.id)
        if rec.status not in (RUNNING, PAUSED) or live is None:
            raise FailedPrecondition(f"container {rec.id} is not running")
        return rec, live

    def live(self, cid: str) -> Live | None:
        with self._guard:
            return self._live.get(cid)

    def _task_call(self, live: Live, method: str, req: Message) -> None:
        live.task.client.call("containerd.task.v2.Task", method, req, empty_pb.Empty, timeout=30)

    def pause(self, ref: str) -> Record:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec, live = self._running(rec.id)
            if rec.status == PAUSED:
                raise FailedPrecondition(f"container {rec.id} is already paused")
            self._unwatch_health(rec.id)
            self._task_call(live, "Pause", task_pb.PauseRequest(id=rec.id))
            rec.status = PAUSED
            self.store.update(rec)
        self.publish(rec, "pause")
        return rec

    def unpause(self, ref: str) -> Record:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec, live = self._running(rec.id)
            if rec.status != PAUSED:
                raise FailedPrecondition(f"container {rec.id} is not paused")
            self._resume(rec, live)
            self._watch_health(self.store.find(rec.id), fresh=False)
        self.publish(rec, "unpause")
        return rec

    def _resume(self, rec: Record, live: Live) -> None:
        self._task_call(live, "Resume", task_pb.ResumeRequest(id=rec.id))
        rec.status = RUNNING
        self.store.update(rec)

    def rename(self, ref: str, name: str) -> Record:
        if not _NAME.match(name):
            raise InvalidArgument(f"container name {name!r}: use letters, digits, _ . -")
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec = self.store.find(rec.id)
            old = rec.name
            rec.name = name
            self.store.update(rec)  # AlreadyExists when the name is taken
        self.publish(rec, "rename", oldName=old)
        return rec

    def restart(self, ref: str, timeout: int) -> Record:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec = self.store.find(rec.id)
            live = self.live(rec.id)
            self.supervisor.cancel(rec.id)
            if live is not None:
                # Marked as the user's stop so that no restart policy races this restart.
                rec.stopped_by_user = True
                self.store.update(rec)
                if rec.status == PAUSED:
                    self._resume(rec, live)
                self._stop(rec, live, timeout)
            rec = self.store.find(rec.id)
            self.supervisor.cancel(rec.id)
            self._start(rec)
        self.publish(rec, "restart")
        return rec

    def update(
        self, ref: str, resources: dict[str, Any] | None, restart: RestartPolicy | None
    ) -> Record:
        """Live resource limits (through the shim) and the restart policy."""
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec = self.store.find(rec.id)
            if resources:
                live = self.live(rec.id)
                if live is None:
                    raise FailedPrecondition(
                        f"container {rec.id} is not running: resources change only while it runs"
                    )
                value = json.dumps(resources).encode()
                any_ = any_pb.Any(type_url=_RESOURCES_TYPE, value=value)
                self._task_call(
                    live, "Update", task_pb.UpdateTaskRequest(id=rec.id, resources=any_)
                )
            if restart is not None:
                req = self.request(rec)
                req.restart = restart
                rec.config = json.dumps(to_dict(req))
            self.store.update(rec)
        self.publish(rec, "update")
        return rec

    def kill(self, ref: str, signal: str) -> None:
        rec, live = self._running(ref)
        num = parse_signal(signal)
        # As Docker's: a container the user killed is not brought back by its restart policy.
        with self._lock(rec.id):
            rec = self.store.find(rec.id)
            rec.stopped_by_user = True
            self.store.update(rec)
        live.task.kill(num)
        self.publish(rec, "kill", signal=str(num))

    def stop(self, ref: str, timeout: int) -> Record:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec = self.store.find(rec.id)
            live = self.live(rec.id)
            rec.stopped_by_user = True
            self.store.update(rec)
            self.supervisor.cancel(rec.id)
            self._unwatch_health(rec.id)
            if live is not None:
                if rec.status == PAUSED:
                    self._resume(rec, live)
                self._stop(rec, live, timeout)
            rec = self.store.find(rec.id)
            if rec.status == RESTARTING:
                # A pending restart ends here: the container stays as it last exited.
                rec.status = EXITED
                rec.next_restart_ns = 0
                self.store.update(rec)
        self.publish(rec, "stop")
        return rec

    def _stop(self, rec: Record, live: Live, timeout: float) -> None:
        """The stop signal (--stop-signal, else SIGTERM), then SIGKILL after the timeout
        (negative: --stop-timeout, else 10 s)."""
        req = self.request(rec)
        if timeout < 0:
            timeout = req.stop_timeout if req.stop_timeout >= 0 and req.stop_timeout else 10
        live.task.kill(parse_signal(req.stop_signal or "SIGTERM"))
        if not live.exited.wait(timeout):
            live.task.kill(int(_signal.SIGKILL), all_=True)
            if not live.exited.wait(30):
                raise FailedPrecondition(f"container {live.task.id} did not exit after SIGKILL")

    # -- remove --------------------------------------------------------------------------------

    def remove(self, ref: str, force: bool) -> None:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            rec = self.store.find(rec.id)
            live = self.live(rec.id)
            if live is not None:
                if not force:
                    raise FailedPrecondition(
                        f"container {rec.id} is running: stop it first or use force"
                    )
                rec.stopped_by_user = True
                self.store.update(rec)
                if rec.status == PAUSED:
                    self._resume(rec, live)
                self._stop(rec, live, 0)
            self.supervisor.cancel(rec.id)
            self._discard(rec.id)
        with self._guard:
            self._locks.pop(rec.id, None)
            self._checks.pop(rec.id, None)
        log.info("removed container %s", rec.id)
        self.publish(rec, "destroy")

    def _discard(self, cid: str) -> None:
        bundle = self.bundle(cid)
        rootfs = os.path.join(bundle, "rootfs")
        if os.path.ismount(rootfs):
            # The shim unmounts it at Delete; never rmtree a mounted container root.
            raise FailedPrecondition(f"container {cid}: {rootfs} is still mounted")
        try:
            self.images.remove_rootfs(cid)
        except NotFound:
            pass  # a create that failed before its snapshot was prepared
        if os.path.isdir(bundle):
            shutil.rmtree(bundle)
        logdir = os.path.dirname(self.log_path(cid))
        if os.path.isdir(logdir):
            shutil.rmtree(logdir)
        self.store.delete(cid)

    # -- queries -------------------------------------------------------------------------------

    def list(self, all_: bool) -> list[Record]:
        return [r for r in self.store.all() if all_ or r.status in (RUNNING, PAUSED, RESTARTING)]

    def inspect(self, ref: str) -> Record:
        return self.store.find(ref)

    def wait(self, ref: str) -> int:
        rec = self.store.find(ref)
        while rec.status == CREATED:
            time.sleep(0.1)
            rec = self.store.find(rec.id)
        with self._guard:
            live = self._live.get(rec.id)
        if live is None:
            return self.store.find(rec.id).exit_code
        live.exited.wait()
        return live.exit_code

    def logs(
        self, ref: str, req: LogsRequest, active: Callable[[], bool] | None = None
    ) -> Iterator[dict[str, object]]:
        """active: False once the client has gone (a follow ends then)."""
        rec = self.store.find(ref)
        with self._guard:
            live = self._live.get(rec.id)
        done = None if live is None else live.log_done
        yield from logs.stream(self.log_path(rec.id), req, done, active)

    def close(self) -> None:
        """kettled is stopping: containers keep running; lingering idle shims go now."""
        self.supervisor.close()
        self.health.close()
        with self._guard:
            addresses = sorted(self._shims)
        for address in addresses:
            shim.release(address, self.namespace)

    # -- start-up ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Reconnect to the shims of containers recorded as running; settle the others: those
        that ended while kettled was away are recorded (their shim kept the status) and get
        their restart policy; pending restarts keep their schedule; exited `always` and
        `unless-stopped` containers come back, as Docker's do when its daemon starts."""
        for rec in self.store.all():
            if rec.status in (RUNNING, PAUSED):
                try:
                    ended = self._reconnect(rec)
                except KettleError as e:
                    log.error("container %s: %s; marking it exited", rec.id, e)
                    ended = self._lost(rec)
                if ended is not None:
                    self.supervisor.exited(ended)
            elif rec.status == RESTARTING:
                self.supervisor.schedule(rec.id, rec.next_restart_ns)
            elif rec.status == EXITED:
                self.supervisor.exited(rec, daemon_restart=True)

    def _reconnect(self, rec: Record) -> Record | None:
        """None: it still runs; else its record, now exited."""
        with self._guard:
            self._shims.add(rec.shim_address)
        task = shim.Task(rec.shim_address, self.namespace, rec.id)
        try:
            st = task.state()
        except KettleError:
            task.close()
            raise
        if st.status != task_types_pb.Status.STOPPED:
            io = self._io(rec)
            io.open()
            live = Live(task, io)
            io.start()
            self._watch(rec.id, live)
            if rec.status == RUNNING:
                self._watch_health(rec, fresh=False)
            log.info("reconnected to container %s", rec.id)
            return None
        io = self._io(rec)
        try:
            io.drain_exited()
        finally:
            io.writer.close()
        try:
            task.delete()
            task.shutdown()
        finally:
            task.close()
        return self._record_exit(rec.id, st.exit_status)

    def _lost(self, rec: Record) -> Record | None:
        try:
            shim.delete(self.namespace, self.events_address, rec.id, self.bundle(rec.id))
        except KettleError as e:
            log.error("container %s: %s", rec.id, e)
        return self._record_exit(rec.id, _EXIT_LOST, lost=True)
