"""kettle.v1 methods: version and the container basics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import kettle
from kettle.api import API_VERSION
from kettle.api import kettle_pb as pb
from kettle.daemon.services import Context
from kettle.daemon.store import Record
from kettle.errors import KettleError, NotFound

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon


def health_msg(text: str) -> pb.Health | None:
    """Record.health (JSON kept by kettle.daemon.health) as the API's message."""
    from kettle.daemon.health import HealthState

    state = HealthState.from_json(text)
    return None if state is None else state.to_msg()


def container_msg(rec: Record, detail: bool = False) -> pb.Container:
    """detail: with the spec and the create request (inspect)."""
    from kettle.daemon.containers import Containers

    req = Containers.request(rec)
    return pb.Container(
        id=rec.id,
        name=rec.name,
        image=rec.image,
        status=rec.status,
        exit_code=rec.exit_code,
        created_ns=rec.created_ns,
        started_ns=rec.started_ns,
        finished_ns=rec.finished_ns,
        pid=rec.pid,
        command=rec.command(),
        labels=rec.labels,
        auto_remove=rec.auto_remove,
        spec_json=rec.spec if detail else "",
        config_json=rec.config if detail else "",
        tty=req.tty,
        open_stdin=req.open_stdin,
        restart=req.restart or pb.RestartPolicy(name="no"),
        restart_count=rec.restart_count,
        last_exit_reason=rec.last_exit_reason,
        next_restart_ns=rec.next_restart_ns,
        health=health_msg(rec.health),
        group=rec.group,
        stopped_by_user=rec.stopped_by_user,
        oom_killed=rec.oom_killed,
    )


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.images = daemon.images
        self.containers = daemon.containers
        self.root = daemon.config.root
        self.state = daemon.config.state

    def version(self, _req: pb.VersionRequest, _ctx: Context) -> pb.VersionResponse:
        return pb.VersionResponse(
            version=kettle.__version__, api_version=API_VERSION, root=self.root, state=self.state
        )

    def create_container(self, req: pb.CreateContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.create(req))

    def start_container(self, req: pb.ContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.start(req.id))

    def stop_container(self, req: pb.StopContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.stop(req.id, req.timeout))

    def kill_container(self, req: pb.KillContainerRequest, _ctx: Context) -> pb.Empty:
        self.containers.kill(req.id, req.signal)
        return pb.Empty()

    def remove_container(self, req: pb.RemoveContainerRequest, _ctx: Context) -> pb.Empty:
        self.containers.remove(req.id, req.force)
        return pb.Empty()

    def list_containers(
        self, req: pb.ListContainersRequest, _ctx: Context
    ) -> pb.ListContainersResponse:
        recs = self.containers.list(req.all)
        return pb.ListContainersResponse(containers=[container_msg(r) for r in recs])

    def inspect_container(self, req: pb.ContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.inspect(req.id), detail=True)

    def logs(self, req: pb.LogsRequest, ctx: Context) -> Iterator[pb.LogEntry]:
        try:
            self.containers.store.find(req.id)
        except NotFound:
            if self.containers.store.get_group(req.id) is None:
                raise
            yield from self._group_logs(req, ctx)
            return
        for e in self.containers.logs(req.id, req, ctx.is_active):
            yield _entry(e)

    def _group_logs(self, req: pb.LogsRequest, ctx: Context) -> Iterator[pb.LogEntry]:
        """Every member's log, each line marked with the member's name: merged by time when
        not following; when following, as the lines come."""
        members = [r for r in self.containers.store.all() if r.group == req.id]
        if not req.follow:
            merged = [_entry(e, r.name) for r in members for e in self.containers.logs(r.id, req)]
            yield from sorted(merged, key=lambda m: m.time_ns)
            return
        import queue
        import threading

        q: queue.Queue[pb.LogEntry | None] = queue.Queue(1024)
        gone = threading.Event()
        ctx.add_callback(gone.set)

        def pump(cid: str, name: str) -> None:
            try:
                for e in self.containers.logs(cid, req, lambda: not gone.is_set()):
                    if gone.is_set():
                        return
                    q.put(_entry(e, name))
            except KettleError:
                pass  # the member was removed (scaled down) while we followed it
            finally:
                q.put(None)

        for r in members:
            threading.Thread(target=pump, args=(r.id, r.name), daemon=True).start()
        running = len(members)
        while running:
            item = q.get()
            if item is None:
                running -= 1
            else:
                yield item

    def wait(self, req: pb.ContainerRequest, _ctx: Context) -> pb.WaitResponse:
        return pb.WaitResponse(exit_code=self.containers.wait(req.id))


def _entry(e: dict[str, object], container: str = "") -> pb.LogEntry:
    return pb.LogEntry(
        stream=str(e["stream"]),
        time_ns=int(str(e["time_ns"])),
        line=str(e["log"]).encode(),
        container=container,
    )
