"""The kettle.v1.Kettle gRPC service: generic handlers carrying Kettle's own messages."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

from kettle.api import CLIENT_STREAMING, SERVER_STREAMING, SERVICE
from kettle.api import kettle_pb as pb
from kettle.errors import FailedPrecondition, KettleError, Unimplemented, oserror_text

log = logging.getLogger("kettled")
_STATUS = {c.name: c for c in grpc.StatusCode}


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


Handler = Callable[[Any, grpc.ServicerContext], Any]


def _unary(method: str, fn: Handler) -> Handler:
    def handler(req: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(req, context)
        except Exception as e:
            _abort(context, method, e)
            raise  # not reached: abort raises

    return handler


def _stream(method: str, fn: Handler) -> Handler:
    def handler(req: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(req, context)
        except Exception as e:
            _abort(context, method, e)

    return handler


def _unimplemented(method: str) -> Handler:
    def fn(_req: Any, _context: grpc.ServicerContext) -> Any:
        raise Unimplemented(f"{method}: not implemented by this kettled")

    return fn


def _encode(msg: Any) -> bytes:
    return bytes(msg.encode())


def handlers(parts: Sequence[object]) -> grpc.GenericRpcHandler:
    """Each method is served by the first part with a method of its snake_case name, called
    as fn(request, context); for client-streaming methods the request is an iterator."""
    table: dict[str, grpc.RpcMethodHandler] = {}
    for name, (req_type, _resp) in pb.KETTLE_SERVICE.methods.items():
        attr = _snake(name)
        fn = next((getattr(p, attr) for p in parts if hasattr(p, attr)), None)
        if fn is None:
            fn = _unimplemented(name)
        uploads, downloads = name in CLIENT_STREAMING, name in SERVER_STREAMING
        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(uploads, downloads)]
        wrap = _stream if downloads else _unary
        table[name] = kind(
            wrap(name, fn), request_deserializer=req_type.decode, response_serializer=_encode
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


def serve(
    parts: Sequence[object],
    path: str,
    group_gid: int | None,
    tcp: tuple[str, str, str, str] | None = None,
) -> grpc.Server:
    """A gRPC server on unix socket `path`, mode 0660 (group: `kettle` when it exists), and
    with tcp = (address, cert, key, ca) also on TCP with mutual TLS."""
    from concurrent.futures import ThreadPoolExecutor

    if os.path.lexists(path):
        _remove_stale(path)
    # Streams (logs -f, events, attach, exec) hold a thread each for as long as they last.
    server = grpc.server(ThreadPoolExecutor(max_workers=256, thread_name_prefix="rpc"))
    server.add_generic_rpc_handlers((handlers(parts),))
    # The socket is born 0660: no moment in which anyone may connect.
    old = os.umask(0o117)
    try:
        server.add_insecure_port(f"unix:{path}")
        if tcp is not None:
            port = add_tcp(server, *tcp)
            log.info("kettled listening on tcp %s (port %d, mutual TLS)", tcp[0], port)
        server.start()
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    if group_gid is not None:
        os.chown(path, 0, group_gid)
    return server


def add_tcp(server: grpc.Server, address: str, cert: str, key: str, ca: str) -> int:
    """A TCP listener with mutual TLS: clients must present a certificate signed by `ca`.
    The port bound (address may ask for port 0)."""
    files = {}
    for what, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        try:
            with open(path, "rb") as f:
                files[what] = f.read()
        except OSError as e:
            raise FailedPrecondition(f"tcp.{what} {path}: {oserror_text(e)}") from None
    creds = grpc.ssl_server_credentials(
        [(files["tls_key"], files["tls_cert"])],
        root_certificates=files["tls_ca"],
        require_client_auth=True,
    )
    port = server.add_secure_port(address, creds)
    if not port:
        raise FailedPrecondition(f"tcp.address {address}: cannot listen there")
    return int(port)


class _Unary:
    """The parts' methods that take one request (unary, and server streams: ttrpc 1.2 Data
    frames), as a kettle.ttrpc server calls them; its Context answers is_active() and
    add_callback() as gRPC's does, the two the parts use."""

    def __init__(self, parts: Sequence[object]) -> None:
        for name in pb.KETTLE_SERVICE.methods:
            if name in CLIENT_STREAMING:
                continue
            attr = _snake(name)
            fn = next((getattr(p, attr) for p in parts if hasattr(p, attr)), None)
            if fn is not None:
                setattr(self, attr, _ttrpc_handler(name, fn))


def _ttrpc_handler(method: str, fn: Handler) -> Callable[[Any, Any], Any]:
    def handler(req: Any, ctx: Any) -> Any:
        try:
            return fn(req, ctx)
        except KettleError:
            raise
        except Exception as e:
            log.exception("%s: unexpected error", method)
            from kettle.errors import Internal

            raise Internal(f"{method}: internal error: {e}") from None

    return handler


def serve_ttrpc(parts: Sequence[object], path: str, group_gid: int | None) -> Any:
    """The methods that take one request over ttrpc on `path` (mode 0660 like the gRPC
    socket): kctl's fast path, since importing grpcio is most of a kctl start."""
    from kettle.ttrpc import Server as TtrpcServer

    if os.path.lexists(path):
        os.unlink(path)  # the gRPC socket beside it was free, so this one is a dead kettled's
    # Access is the socket's mode and group, as for the gRPC socket (no same-user check).
    server = TtrpcServer(peer_check=None, log=lambda line: log.warning("ttrpc: %s", line))
    server.register_service(pb.KETTLE_SERVICE, _Unary(parts))
    server.listen(path, mode=0o660)
    if group_gid is not None:
        os.chown(path, 0, group_gid)
    server.start()
    return server
