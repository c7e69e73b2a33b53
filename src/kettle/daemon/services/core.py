"""kettle.v1 methods: version, images (pull, list, remove) and the container basics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import kettle
from kettle.api import API_VERSION
from kettle.api import kettle_pb as pb
from kettle.daemon.services import Context
from kettle.daemon.store import Record

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon
    from kettle.image.metadata import ImageRecord
    from kettle.image.pull import PullEvent


def container_msg(rec: Record, with_spec: bool = False) -> pb.Container:
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
        spec_json=rec.spec if with_spec else "",
    )


def image_msg(rec: ImageRecord) -> pb.Image:
    return pb.Image(
        name=rec.name,
        digest=rec.target,
        config=rec.config,
        size=rec.size,
        created_ns=int(rec.created * 1e9),
        platform=rec.platform,
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

    def pull_image(self, req: pb.PullImageRequest, _ctx: Context) -> Iterator[pb.PullProgress]:
        import queue
        import threading

        events: queue.Queue[pb.PullProgress | BaseException | None] = queue.Queue()

        def progress(ev: PullEvent) -> None:
            events.put(
                pb.PullProgress(kind=ev.kind, digest=ev.digest, done=ev.done, total=ev.total)
            )

        def run() -> None:
            try:
                rec = self.images.pull(req.reference, progress=progress)
                events.put(
                    pb.PullProgress(kind="complete", digest=rec.target, image=image_msg(rec))
                )
                events.put(None)
            except BaseException as e:  # handed to the RPC thread, which reports it
                events.put(e)

        threading.Thread(target=run, name="pull", daemon=True).start()
        while True:
            item = events.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def list_images(self, _req: pb.ListImagesRequest, _ctx: Context) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=[image_msg(r) for r in self.images.list()])

    def remove_image(self, req: pb.RemoveImageRequest, _ctx: Context) -> pb.Empty:
        self.images.remove(req.reference)
        return pb.Empty()

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
        return container_msg(self.containers.inspect(req.id), with_spec=True)

    def logs(self, req: pb.LogsRequest, _ctx: Context) -> Iterator[pb.LogEntry]:
        for e in self.containers.logs(req.id, req):
            yield pb.LogEntry(
                stream=str(e["stream"]),
                time_ns=int(str(e["time_ns"])),
                line=str(e["log"]).encode(),
            )

    def wait(self, req: pb.ContainerRequest, _ctx: Context) -> pb.WaitResponse:
        return pb.WaitResponse(exit_code=self.containers.wait(req.id))
