"""References, platforms, manifests, configs: pure parsing (no root, no registry)."""

from __future__ import annotations

import json

import pytest

from kettle.errors import InvalidArgument, NotFound, Unimplemented
from kettle.image import mediatypes as mt
from kettle.image.config import parse_config
from kettle.image.digest import chain_ids
from kettle.image.manifest import (
    detect_media_type,
    parse_index,
    parse_manifest,
    select_manifest,
)
from kettle.image.platform import Platform, parse_platform
from kettle.image.reference import parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "full", "endpoint"),
    [
        ("busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "registry-1.docker.io"),
        ("library/busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
        ("user/app", "docker.io/user/app:latest", "registry-1.docker.io"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1", "registry-1.docker.io"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "registry-1.docker.io"),
        ("localhost/app", "localhost/app:latest", "localhost"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000"),
        ("quay.io/org/app@" + D, "quay.io/org/app@" + D, "quay.io"),
        ("quay.io/org/app:v2@" + D, "quay.io/org/app:v2@" + D, "quay.io"),
        ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000"),
        ("Registry/app", "Registry/app:latest", "Registry"),
    ],
)
def test_reference_normalised_like_docker(text: str, full: str, endpoint: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.endpoint_host == endpoint


def test_reference_familiar_and_object() -> None:
    ref = parse_reference("busybox")
    assert ref.familiar() == "busybox:latest"
    assert ref.object == "latest"
    assert parse_reference("a/b@" + D).object == D
    assert parse_reference("a/b@" + D).tag is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "Busybox",
        "a" * 64,
        "busybox:",
        "busybox:-bad",
        "busybox@sha256:short",
        "busybox@md5:" + "a" * 32,
        "host:5000/",
        "a//b",
        "a/B",
        "x/" + "y" * 260,
    ],
)
def test_reference_rejected(text: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_reference(text)
    assert "reference" in str(exc.value)


def test_platform_parse() -> None:
    assert parse_platform("linux/arm64") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux/aarch64/v8") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux/arm") == Platform("linux", "arm", "v7")
    assert parse_platform("amd64") == Platform("linux", "amd64", "")
    with pytest.raises(InvalidArgument):
        parse_platform("linux//x")


def _desc(arch: str, os_: str = "linux", variant: str = "", d: str = D, **extra: object) -> dict:
    plat = {"os": os_, "architecture": arch}
    if variant:
        plat["variant"] = variant
    return {"mediaType": mt.OCI_MANIFEST, "digest": d, "size": 10, "platform": plat, **extra}


def _index(*descs: dict) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": list(descs)}
    ).encode()


def test_select_manifest_prefers_exact_and_skips_attestations() -> None:
    b = "sha256:" + "b" * 64
    c = "sha256:" + "c" * 64
    idx = parse_index(
        _index(
            _desc("unknown", "unknown", d=c),
            _desc("arm", variant="v6", d=b),
            _desc("arm", variant="v7", d=D),
            _desc("amd64", d=c, annotations={"vnd.docker.reference.type": "attestation-manifest"}),
        ),
        mt.OCI_INDEX,
        "test",
    )
    assert select_manifest(idx, Platform("linux", "arm", "v7"), "t").digest == D
    assert select_manifest(idx, Platform("linux", "arm", "v6"), "t").digest == b
    with pytest.raises(NotFound) as exc:
        select_manifest(idx, Platform("linux", "amd64"), "image x")
    assert "linux/arm/v6" in str(exc.value) and "no manifest for platform linux/amd64" in str(
        exc.value
    )


def test_arm64_without_variant_matches_v8() -> None:
    idx = parse_index(_index(_desc("arm64")), mt.OCI_INDEX, "t")
    assert select_manifest(idx, Platform("linux", "arm64", "v8"), "t").digest == D


def test_schema1_rejected_clearly() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    media = detect_media_type(body, "application/json", "m")
    assert media == mt.DOCKER_SCHEMA1
    with pytest.raises(Unimplemented) as exc:
        parse_manifest(body, mt.DOCKER_SCHEMA1_SIGNED, "image x")
    assert "schema 1" in str(exc.value)


def _manifest(layer_type: str = mt.OCI_LAYER_GZIP, config_type: str = mt.OCI_CONFIG) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": D, "size": 2},
            "layers": [{"mediaType": layer_type, "digest": D, "size": 3}],
        }
    ).encode()


def test_manifest_parse_and_rejects() -> None:
    m = parse_manifest(_manifest(), mt.OCI_MANIFEST, "m")
    assert m.layers[0].size == 3
    with pytest.raises(Unimplemented, match="not a container image"):
        parse_manifest(_manifest(config_type="application/vnd.example+json"), mt.OCI_MANIFEST, "m")
    with pytest.raises(Unimplemented, match="foreign"):
        parse_manifest(_manifest(layer_type=mt.DOCKER_FOREIGN_GZIP), mt.OCI_MANIFEST, "m")
    with pytest.raises(InvalidArgument, match="size"):
        parse_manifest(_manifest().replace(b'"size": 3', b'"size": -1'), mt.OCI_MANIFEST, "m")
    with pytest.raises(InvalidArgument, match="json"):
        parse_manifest(b"{nope", mt.OCI_MANIFEST, "m")


def test_config_fields() -> None:
    body = json.dumps(
        {
            "os": "linux",
            "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": [D]},
            "config": {
                "User": "1000",
                "Env": ["A=1"],
                "Entrypoint": ["/e"],
                "Cmd": None,
                "WorkingDir": "/w",
                "ExposedPorts": {"80/tcp": {}},
                "Labels": {"k": "v"},
                "Healthcheck": {"Test": ["CMD", "x"], "Retries": 2},
            },
        }
    ).encode()
    cfg = parse_config(body, "c")
    assert cfg.user == "1000" and cfg.entrypoint == ("/e",) and cfg.cmd is None
    assert cfg.exposed_ports == ("80/tcp",) and cfg.labels == {"k": "v"}
    assert cfg.healthcheck is not None and cfg.healthcheck.retries == 2
    with pytest.raises(InvalidArgument, match=r"config.Env"):
        parse_config(body.replace(b'["A=1"]', b'"A=1"'), "c")
    with pytest.raises(InvalidArgument, match="rootfs"):
        parse_config(b'{"os": "linux"}', "c")


def test_chain_ids() -> None:
    import hashlib

    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert chain_ids([a]) == [a]
    second = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, second]
