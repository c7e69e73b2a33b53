#!/bin/sh
# Regenerate descriptors.binpb and the *_pb.py modules from the .proto files in this directory.
#
# The generated modules are checked in, so installing or running Kettle needs neither protoc nor
# the protobuf package.  This script is only for changing a .proto: it puts grpcio-tools (protoc
# plus the protobuf runtime that _gen.py reads the descriptor set with) into a private venv under
# the repository's .tmp/ (or $KETTLE_PROTOC_VENV), runs protoc, then _gen.py, then ruff.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
repo=$(cd "$src/.." && pwd)
tools=${KETTLE_PROTOC_VENV:-$repo/.tmp/protoc-venv}
grpcio_tools_version=${GRPCIO_TOOLS_VERSION:-1.85.1}

if [ ! -x "$tools/bin/python" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet "grpcio-tools==$grpcio_tools_version"
fi
include=$("$tools/bin/python" -c \
    'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

cd "$src"
"$tools/bin/python" -m grpc_tools.protoc -I. -I"$include" --include_imports \
    --descriptor_set_out=kettle/proto/descriptors.binpb kettle/proto/*.proto
"$tools/bin/python" kettle/proto/_gen.py kettle/proto/descriptors.binpb kettle/proto

ruff=${RUFF:-$repo/.venv/bin/ruff}
if [ -x "$ruff" ]; then
    # The generator already emits ruff-clean code; this only proves it.
    "$ruff" format --check kettle/proto/*_pb.py
    "$ruff" check kettle/proto/*_pb.py
fi
