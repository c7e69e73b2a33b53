"""The kettle.v1.Kettle gRPC service: generic handlers carrying Kettle's own messages."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

import kettle
from kettle.api import API_VERSION, SERVER_STREAMING, SERVICE
from kettle.api import kettle_pb as pb
from kettle.daemon.containers import Containers
from kettle.daemon.store import Record
from kettle.errors import FailedPrecondition, KettleError, oserror_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.image.metadata import ImageRecord
    from kettle.image.pull import PullEvent
    from kettle.image.service import ImageService

log = logging.getLogger("kettled")
_STATUS = {c.name: c for c in grpc.StatusCode}


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


class Service:
    def __init__(self, images: ImageService, containers: Containers, root: str, state: str) -> None:
        self.images = images
        self.containers = containers
        self.root = root
        self.state = state

    def version(self, _req: pb.VersionRequest) -> pb.VersionResponse:
        return pb.VersionResponse(
            version=kettle.__version__, api_version=API_VERSION, root=self.root, state=self.state
        )

    def pull_image(self, req: pb.PullImageRequest) -> Iterator[pb.PullProgress]:
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

    def list_images(self, _req: pb.ListImagesRequest) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=[image_msg(r) for r in self.images.list()])

    def remove_image(self, req: pb.RemoveImageRequest) -> pb.Empty:
        self.images.remove(req.reference)
        return pb.Empty()

    def create_container(self, req: pb.CreateContainerRequest) -> pb.Container:
        return container_msg(self.containers.create(req))

    def start_container(self, req: pb.ContainerRequest) -> pb.Container:
        return container_msg(self.containers.start(req.id))

    def stop_container(self, req: pb.StopContainerRequest) -> pb.Container:
        return container_msg(self.containers.stop(req.id, req.timeout))

    def kill_container(self, req: pb.KillContainerRequest) -> pb.Empty:
        self.containers.kill(req.id, req.signal)
        return pb.Empty()

    def remove_container(self, req: pb.RemoveContainerRequest) -> pb.Empty:
        self.containers.remove(req.id, req.force)
        return pb.Empty()

    def list_containers(self, req: pb.ListContainersRequest) -> pb.ListContainersResponse:
        recs = self.containers.list(req.all)
        return pb.ListContainersResponse(containers=[container_msg(r) for r in recs])

    def inspect_container(self, req: pb.ContainerRequest) -> pb.Container:
        return container_msg(self.containers.inspect(req.id), with_spec=True)

    def logs(self, req: pb.LogsRequest) -> Iterator[pb.LogEntry]:
        for e in self.containers.logs(req.id, req.follow, req.tail):
            yield pb.LogEntry(
                stream=str(e["stream"]),
                time_ns=int(str(e["time_ns"])),
                line=str(e["log"]).encode(),
            )

    def wait(self, req: pb.ContainerRequest) -> pb.WaitResponse:
        return pb.WaitResponse(exit_code=self.containers.wait(req.id))


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


#: trailing metadata on every error kettled answers, so that kctl tells kettled's own
#: UNAVAILABLE (a registry down) from not reaching kettled at all.
ERROR_MARK = ("kettle-error", "1")


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    context.set_trailing_metadata((ERROR_MARK,))
    if isinstance(exc, KettleError):
        code = _STATUS.get(exc.code, grpc.StatusCode.UNKNOWN)
        context.abort(code, str(exc))
    log.exception("%s: unexpected error", method)
    context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error: {exc}")


def _unary(method: str, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handler(req: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(req)
        except Exception as e:
            _abort(context, method, e)
            raise  # not reached: abort raises

    return handler


def _stream(
    method: str, fn: Callable[[Any], Iterator[Any]]
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def handler(req: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(req)
        except Exception as e:
            _abort(context, method, e)

    return handler


def _encode(msg: Any) -> bytes:
    return bytes(msg.encode())


def handlers(service: Service) -> grpc.GenericRpcHandler:
    table: dict[str, grpc.RpcMethodHandler] = {}
    for name, (req_type, _resp) in pb.KETTLE_SERVICE.methods.items():
        fn = getattr(service, _snake(name))
        if name in SERVER_STREAMING:
            table[name] = grpc.unary_stream_rpc_method_handler(
                _stream(name, fn), request_deserializer=req_type.decode, response_serializer=_encode
            )
        else:
            table[name] = grpc.unary_unary_rpc_method_handler(
                _unary(name, fn), request_deserializer=req_type.decode, response_serializer=_encode
            )
    return grpc.method_handlers_generic_handler(SERVICE, table)


def _remove_stale(path: str) -> None:
    """Unlink a socket a dead kettled left; refuse one that somebody still answers on."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
        except OSError as e:
            raise FailedPrecondition(f"address {path}: {oserror_text(e)}") from None
    raise FailedPrecondition(f"address {path}: another kettled is listening there")


def serve(service: Service, path: str, group_gid: int | None) -> grpc.Server:
    """A gRPC server on unix socket `path`, mode 0660 (group: `kettle` when it exists)."""
    from concurrent.futures import ThreadPoolExecutor

    if os.path.lexists(path):
        _remove_stale(path)
    server = grpc.server(ThreadPoolExecutor(max_workers=64, thread_name_prefix="rpc"))
    server.add_generic_rpc_handlers((handlers(service),))
    # The socket is born 0660: no moment in which anyone may connect.
    old = os.umask(0o117)
    try:
        server.add_insecure_port(f"unix:{path}")
        server.start()
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    if group_gid is not None:
        os.chown(path, 0, group_gid)
    return server
