"""containerd's protobuf messages for Kettle, encoded by a small built-in codec.

The .proto files here are Kettle's own, wire-compatible (same packages, names and field numbers)
with containerd's task v2 shim API, events, ttrpc envelope, cgroup metrics and runc options.
`gen-proto.sh` turns them into the checked-in `*_pb.py` modules; `_wire` encodes and decodes.
Import the modules you need (e.g. `from kettle.proto import task_pb`); this package imports
nothing so that a shim pays only for what it uses.
"""
