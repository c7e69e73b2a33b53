"""The generated message modules against the .proto files and the protobuf package.

protobuf is a development dependency only: it reads the checked-in descriptor set (what protoc
made of our .proto files) so that we can check, message by message, that Kettle's own codec
writes and reads exactly what protobuf does, and that the checked-in modules are not stale.
"""

from __future__ import annotations

import importlib
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kettle.proto import _gen, _wire

PROTO_DIR = Path(__file__).resolve().parents[2] / "src" / "kettle" / "proto"
DESCRIPTORS = PROTO_DIR / "descriptors.binpb"

descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")


def file_set() -> Any:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(DESCRIPTORS.read_bytes())
    return fds


def all_message_classes() -> list[type[_wire.Message]]:
    out = []
    for fd in file_set().file:
        module = importlib.import_module(f"kettle.proto.{_gen.module_name(fd.name)}")
        out += [getattr(module, m.name) for m in fd.message_type]
    return out


def test_generated_modules_are_up_to_date() -> None:
    for name, source in _gen.generate(file_set()).items():
        path = PROTO_DIR / f"{name}.py"
        assert path.read_text() == source, f"{path} is stale: run src/kettle/proto/gen-proto.sh"


def test_every_proto_file_is_in_the_descriptor_set() -> None:
    names = {Path(fd.name).name for fd in file_set().file}
    assert {p.name for p in PROTO_DIR.glob("*.proto")} <= names


def test_descriptor_set_matches_the_proto_files(tmp_path: Path) -> None:
    tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (protoc) not installed")
    include = Path(tools.__file__).parent / "_proto"
    out = tmp_path / "d.binpb"
    src = PROTO_DIR.parents[1]
    protos = sorted(str(p.relative_to(src)) for p in PROTO_DIR.glob("*.proto"))
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"-I{include}"]
    cmd += ["--include_imports", f"--descriptor_set_out={out}", *protos]
    subprocess.run(cmd, check=True)
    fresh = descriptor_pb2.FileDescriptorSet()
    fresh.ParseFromString(out.read_bytes())
    assert {f.name: f for f in fresh.file} == {f.name: f for f in file_set().file}


def sample(cls: type[_wire.Message], rng: random.Random, depth: int = 0) -> _wire.Message:
    """An instance with every field set to a non-default value."""
    kwargs: dict[str, Any] = {}
    for f in cls.FIELDS:
        if f.label == _wire.MAP:
            kwargs[f.name] = {f"k{i}-{rng.randrange(99)}": f"v{i}" for i in range(3)}
            continue
        if f.kind == _wire.MESSAGE:
            if depth > 3:
                continue
            sub = f.message_type
            assert sub is not None

            def value(sub: type[_wire.Message] = sub) -> Any:
                return sample(sub, rng, depth + 1)
        else:
            value = _scalar(f.kind, rng)
        kwargs[f.name] = [value(), value()] if f.label == _wire.REPEATED else value()
    return cls(**kwargs)


def _scalar(kind: int, rng: random.Random) -> Any:
    gens = {
        _wire.INT32: lambda: rng.choice([-1, -(1 << 31), (1 << 31) - 1, rng.randrange(1, 1000)]),
        _wire.ENUM: lambda: rng.randrange(1, 4),
        _wire.INT64: lambda: rng.choice([-1, -(1 << 63), (1 << 63) - 1, rng.randrange(1, 1 << 40)]),
        _wire.UINT32: lambda: rng.choice([1, (1 << 32) - 1, rng.randrange(1, 1 << 32)]),
        _wire.UINT64: lambda: rng.choice([1, (1 << 64) - 1, rng.randrange(1, 1 << 64)]),
        _wire.BOOL: lambda: True,
        _wire.STRING: lambda: rng.choice(["x", "héllo", "/run/containerd/s/" + "a" * 64]),
        _wire.BYTES: lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
    }
    return gens[kind]


@pytest.mark.parametrize("seed", range(5))
def test_codec_matches_protobuf_for_every_message(seed: int) -> None:
    from google.protobuf import descriptor_pool, message_factory  # type: ignore[import-untyped, import-not-found, unused-ignore]

    pool = descriptor_pool.DescriptorPool()
    reference = message_factory.GetMessages(list(file_set().file), pool=pool)
    rng = random.Random(seed)
    classes = all_message_classes()
    assert len(classes) >= 79
    for cls in classes:
        ours = sample(cls, rng)
        data = ours.encode()
        theirs = reference[cls.FULL_NAME]()
        theirs.ParseFromString(data)
        # Unknown fields would be written back verbatim and hide a wrong field number.
        theirs.DiscardUnknownFields()
        assert theirs.SerializeToString(deterministic=True) == data, cls.FULL_NAME
        assert cls.decode(theirs.SerializeToString()) == ours, cls.FULL_NAME
        assert cls.decode(data) == ours, cls.FULL_NAME
        # And the empty message is empty bytes on both sides.
        assert cls().encode() == reference[cls.FULL_NAME]().SerializeToString() == b""


def test_gen_proto_script_is_executable() -> None:
    script = PROTO_DIR / "gen-proto.sh"
    assert script.stat().st_mode & 0o111
    if shutil.which("sh") is None:
        pytest.skip("no sh")
    out = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
