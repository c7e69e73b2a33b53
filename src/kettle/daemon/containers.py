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
from collections.abc import Iterator
from dataclasses import dataclass, field

from kettle.api.convert import from_dict, to_dict
from kettle.daemon import logs, shim, stdio, users
from kettle.daemon import spec as specmod
from kettle.daemon.store import CREATED, EXITED, RUNNING, Record, Store
from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, NotFound
from kettle.proto import mount_pb, task_types_pb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.api.kettle_pb import CreateContainerRequest, LogsRequest
    from kettle.daemon.bus import EventBus
    from kettle.daemon.config import Config
    from kettle.image.service import ImageService

log = logging.getLogger("kettled")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_STOP_DEFAULT_S = 10
_EXIT_LOST = 255
_COPIER_DRAIN_S = 5.0


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
            spec = specmod.build(self.namespace, cid, req.hostname or cid[:12], config, req, user)
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
            if rec.status == RUNNING:
                raise FailedPrecondition(f"container {rec.id} is already running")
            self._start(rec)
        return rec

    def _rootfs(self, cid: str) -> list[mount_pb.Mount]:
        with open(os.path.join(self.bundle(cid), "rootfs.json")) as f:
            raw = json.load(f)
        return [
            mount_pb.Mount(type=m["type"], source=m["source"], options=list(m["options"]))
            for m in raw
        ]

    def _start(self, rec: Record) -> None:
        bundle = self.bundle(rec.id)
        task: shim.Task | None = None
        io = self._io(rec)
        live: Live | None = None
        try:
            io.open()
            address = shim.start(self.namespace, self.events_address, rec.id, bundle)
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
        log.info("started container %s, pid %d", rec.id, rec.pid)
        self.publish(rec, "start")

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
        try:
            code = live.task.wait()
        except KettleError as e:
            log.error("container %s: lost its shim: %s", cid, e)
            code = _EXIT_LOST
        live.io.wait_drained(_COPIER_DRAIN_S)
        live.io.writer.close()
        live.log_done.set()
        try:
            live.task.delete()
            live.task.shutdown()
        except KettleError as e:
            log.error("container %s: delete task: %s", cid, e)
        live.task.close()
        self._record_exit(cid, code)
        with self._guard:
            self._live.pop(cid, None)
        live.exit_code = code
        live.exited.set()
        log.info("container %s exited with status %d", cid, code)
        try:
            rec = self.store.find(cid)
        except KettleError:
            return  # removed meanwhile
        if rec.auto_remove:
            try:
                self.remove(cid, force=True)
            except KettleError as e:
                log.error("container %s: auto-remove: %s", cid, e)

    def _record_exit(self, cid: str, code: int, lost: bool = False) -> None:
        rec = self.store.get(cid)
        if rec is None:
            return
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

    def mark_oom(self, cid: str) -> None:
        """The shim saw the container's cgroup OOM-kill a process."""
        rec = self.store.get(cid)
        if rec is None:
            return
        rec.oom_killed = True
        self.store.update(rec)
        self.publish(rec, "oom")

    # -- signals -------------------------------------------------------------------------------

    def _running(self, ref: str) -> tuple[Record, Live]:
        rec = self.store.find(ref)
        with self._guard:
            live = self._live.get(rec.id)
        if rec.status != RUNNING or live is None:
            raise FailedPrecondition(f"container {rec.id} is not running")
        return rec, live

    def kill(self, ref: str, signal: str) -> None:
        rec, live = self._running(ref)
        num = parse_signal(signal)
        live.task.kill(num)
        self.publish(rec, "kill", signal=str(num))

    def stop(self, ref: str, timeout: int) -> Record:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            with self._guard:
                live = self._live.get(rec.id)
            rec.stopped_by_user = True
            self.store.update(rec)
            if live is not None:
                self._stop(live, _STOP_DEFAULT_S if timeout < 0 else timeout)
        rec = self.store.find(rec.id)
        self.publish(rec, "stop")
        return rec

    def _stop(self, live: Live, timeout: float) -> None:
        live.task.kill(int(_signal.SIGTERM))
        if not live.exited.wait(timeout):
            live.task.kill(int(_signal.SIGKILL), all_=True)
            if not live.exited.wait(30):
                raise FailedPrecondition(f"container {live.task.id} did not exit after SIGKILL")

    # -- remove --------------------------------------------------------------------------------

    def remove(self, ref: str, force: bool) -> None:
        rec = self.store.find(ref)
        with self._lock(rec.id):
            with self._guard:
                live = self._live.get(rec.id)
            if live is not None:
                if not force:
                    raise FailedPrecondition(
                        f"container {rec.id} is running: stop it first or use force"
                    )
                self._stop(live, 0)
            self._discard(rec.id)
        with self._guard:
            self._locks.pop(rec.id, None)
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
        return [r for r in self.store.all() if all_ or r.status == RUNNING]

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

    def logs(self, ref: str, req: LogsRequest) -> Iterator[dict[str, object]]:
        rec = self.store.find(ref)
        with self._guard:
            live = self._live.get(rec.id)
        done = None if live is None else live.log_done
        yield from logs.stream(self.log_path(rec.id), req, done)

    # -- start-up ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Reconnect to the shims of containers recorded as running; settle the others."""
        for rec in self.store.all():
            if rec.status != RUNNING:
                continue
            try:
                self._reconnect(rec)
            except KettleError as e:
                log.error("container %s: %s; marking it exited", rec.id, e)
                self._lost(rec)

    def _reconnect(self, rec: Record) -> None:
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
            log.info("reconnected to container %s", rec.id)
            return
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
        self._record_exit(rec.id, st.exit_status)

    def _lost(self, rec: Record) -> None:
        try:
            shim.delete(self.namespace, self.events_address, rec.id, self.bundle(rec.id))
        except KettleError as e:
            log.error("container %s: %s", rec.id, e)
        self._record_exit(rec.id, _EXIT_LOST, lost=True)
