"""kettle.v1's generated module against kettle.proto and the protobuf package (dev only)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kettle.api
from kettle.api import kettle_pb as pb
from kettle.proto import _gen

API_DIR = Path(kettle.api.__file__).parent
descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")


def file_set() -> Any:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString((API_DIR / "descriptors.binpb").read_bytes())
    return fds


def test_generated_module_is_up_to_date() -> None:
    (source,) = _gen.generate(file_set()).values()
    assert (API_DIR / "kettle_pb.py").read_text() == source, "run src/kettle/api/gen-api.sh"


def test_streaming_methods_are_the_protos() -> None:
    text = (API_DIR / "kettle.proto").read_text()
    streaming = set(re.findall(r"rpc (\w+)\((?:stream )?\w+\) returns \(stream ", text))
    assert streaming == kettle.api.SERVER_STREAMING
    uploads = set(re.findall(r"rpc (\w+)\(stream ", text))
    assert uploads == kettle.api.CLIENT_STREAMING
    assert set(re.findall(r"rpc (\w+)\(", text)) == set(pb.KETTLE_SERVICE.methods)


def test_descriptor_set_matches_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (protoc) not installed")
    (tmp_path / "kettle" / "api").mkdir(parents=True)
    text = (API_DIR / "kettle.proto").read_text().replace("(stream ", "(")
    (tmp_path / "kettle" / "api" / "kettle.proto").write_text(text)
    out = tmp_path / "d.binpb"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}"]
    subprocess.run([*cmd, f"--descriptor_set_out={out}", "kettle/api/kettle.proto"], check=True)
    assert out.read_bytes() == (API_DIR / "descriptors.binpb").read_bytes()


def test_codec_matches_protobuf() -> None:
    from google.protobuf import descriptor_pool, message_factory  # type: ignore[import-untyped, import-not-found, unused-ignore]

    reference = message_factory.GetMessages(
        list(file_set().file), pool=descriptor_pool.DescriptorPool()
    )
    samples = [
        pb.Container(
            id="c",
            name="n",
            status="exited",
            exit_code=-1,
            created_ns=1 << 62,
            pid=7,
            command=["sh", "-c", "é"],
            labels={"a": "b", "c": ""},
            auto_remove=True,
        ),
        pb.PullProgress(kind="complete", done=3, total=-1, image=pb.Image(name="x", size=5)),
        pb.CreateContainerRequest(image="i", entrypoint_set=True, env=["A=1"], network="host"),
        pb.LogEntry(stream="stderr", time_ns=1, line=b"\xff\x00\n"),
    ]
    for ours in samples:
        theirs = reference[type(ours).FULL_NAME]()
        theirs.ParseFromString(ours.encode())
        theirs.DiscardUnknownFields()
        assert type(ours).decode(theirs.SerializeToString()) == ours, type(ours).FULL_NAME
