"""A small CRI (runtime.v1) client for the tests, with its API taken from /usr/bin/containerd.

containerd 1.6 embeds the CRI API's FileDescriptorProto (gzipped, as gogo/protobuf registers
it) in its binary; the client finds it there, drops the gogoproto options, and calls
RuntimeService/ImageService methods through grpcio with protobuf's dynamic messages.  Needs
the `grpcio` and `protobuf` packages (test-only dependencies).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

CONTAINERD = Path("/usr/bin/containerd")
_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"


def _strip_options(msg: Any) -> None:
    """Clear every `options` field (gogoproto extensions we do not load), recursively."""
    for field, value in msg.ListFields():
        if field.name == "options":
            msg.ClearField("options")
        elif field.message_type is not None:
            if isinstance(value, (list, tuple)) or hasattr(value, "extend"):
                for item in value:
                    _strip_options(item)
            else:
                _strip_options(value)


def cri_descriptor(binary: Path = CONTAINERD) -> Any:
    """The runtime.v1 FileDescriptorProto embedded in containerd (None when absent)."""
    from google.protobuf import descriptor_pb2

    data = binary.read_bytes()
    start = 0
    while (start := data.find(_GZIP, start)) >= 0:
        try:
            raw = zlib.decompressobj(31).decompress(data[start : start + (4 << 20)])
            fd = descriptor_pb2.FileDescriptorProto()
            fd.ParseFromString(raw)
        except Exception:  # not a descriptor: most gzip headers in a binary are not
            fd = None
        start += 1
        if fd is not None and fd.package == "runtime.v1" and fd.service:
            del fd.dependency[:]
            _strip_options(fd)
            return fd
    return None


class Cri:
    """runtime.v1 over containerd's gRPC socket: `cri.call("RunPodSandbox", {...})`."""

    def __init__(self, address: str) -> None:
        import grpc
        from google.protobuf import descriptor_pool, json_format, message_factory

        fd = cri_descriptor()
        if fd is None:
            raise RuntimeError(f"no runtime.v1 API descriptor in {CONTAINERD}")
        self._pool = descriptor_pool.DescriptorPool()
        self._file = self._pool.Add(fd)
        self._json = json_format
        self._factory = message_factory
        self.channel = grpc.insecure_channel(f"unix://{address}")
        self._methods: dict[str, tuple[str, Any, Any]] = {}
        for service in fd.service:
            for m in service.method:
                req = self._class(m.input_type)
                resp = self._class(m.output_type)
                self._methods[m.name] = (f"/runtime.v1.{service.name}/{m.name}", req, resp)

    def _class(self, full_name: str) -> Any:
        desc = self._pool.FindMessageTypeByName(full_name.lstrip("."))
        return self._factory.GetMessageClass(desc)

    def call(self, method: str, request: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        path, req_cls, resp_cls = self._methods[method]
        req = self._json.ParseDict(request, req_cls())
        stub = self.channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=resp_cls.FromString,
        )
        resp = stub(req, timeout=timeout)
        out: dict[str, Any] = self._json.MessageToDict(
            resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return out

    def close(self) -> None:
        self.channel.close()
