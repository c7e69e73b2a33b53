#!/bin/sh
# Regenerate kettle_pb.py from kettle.proto with Kettle's lean generator (kettle/proto/_gen.py).
#
# The generated module is checked in: running Kettle needs neither protoc nor protobuf.  Uses
# the same throwaway grpcio-tools venv as kettle/proto/gen-proto.sh (grpcio-tools 1.85.1).
# _gen.py knows no streaming methods, so protoc is fed a copy with `stream` removed: the
# messages are the same, and kettle.api.SERVER_STREAMING lists which methods stream
# (tests/daemon/test_api_proto.py checks both against kettle.proto).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
repo=$(cd "$src/.." && pwd)
tools=${KETTLE_PROTOC_VENV:-$repo/.tmp/protoc-venv}
if [ ! -x "$tools/bin/python" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet "grpcio-tools==${GRPCIO_TOOLS_VERSION:-1.85.1}"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/kettle/api"
sed 's/(stream /(/g' "$here/kettle.proto" > "$tmp/kettle/api/kettle.proto"
"$tools/bin/python" -m grpc_tools.protoc -I"$tmp" --descriptor_set_out="$here/descriptors.binpb" \
    kettle/api/kettle.proto
"$tools/bin/python" "$src/kettle/proto/_gen.py" "$here/descriptors.binpb" "$here"
ruff=${RUFF:-$repo/.venv/bin/ruff}
if [ -x "$ruff" ]; then
    "$ruff" format --check "$here/kettle_pb.py"
    "$ruff" check "$here/kettle_pb.py"
fi
