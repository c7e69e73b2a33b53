"""Challenges, credentials files, decompression: no root, no registry."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os

import pytest

from kettle.errors import InvalidArgument, PermissionDenied
from kettle.image.auth import parse_challenges
from kettle.image.credentials import CredentialStore
from kettle.image.decompress import decompressor


def test_parse_challenges() -> None:
    cs = parse_challenges(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push", Basic realm="x"'
    )
    assert [c.scheme for c in cs] == ["bearer", "basic"]
    assert cs[0].params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenges('basic realm="a \\"q\\""')[0].params["realm"] == 'a "q"'


def _write(path: str, doc: dict, mode: int) -> None:
    with open(path, "w") as f:
        json.dump(doc, f)
    os.chmod(path, mode)


def test_kettle_file_must_be_private(tmp_path) -> None:
    kf = str(tmp_path / "auth.json")
    auth = base64.b64encode(b"u:p").decode()
    _write(kf, {"auths": {"reg.example:5000": {"auth": auth}}}, 0o644)
    store = CredentialStore(kf, str(tmp_path / "none.json"))
    with pytest.raises(PermissionDenied) as exc:
        store.get("reg.example:5000")
    assert kf in str(exc.value) and "0644" in str(exc.value)
    os.chmod(kf, 0o600)
    cred = store.get("reg.example:5000")
    assert cred is not None and (cred.username, cred.password) == ("u", "p")
    assert store.get("other.example") is None


def test_docker_config_keys_and_hub_alias(tmp_path) -> None:
    dc = str(tmp_path / "config.json")
    _write(
        dc,
        {
            "auths": {
                "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
                "https://reg.example/v2/": {"identitytoken": "refresh"},
            }
        },
        0o644,  # Docker's own file is not held to 0600
    )
    store = CredentialStore(str(tmp_path / "kettle.json"), dc)
    hub = store.get("docker.io")
    assert hub is not None and hub.username == "hub"
    tok = store.get("reg.example")
    assert tok is not None and tok.identity_token == "refresh"


def test_save_writes_0600_and_round_trips(tmp_path) -> None:
    kf = str(tmp_path / "sub" / "auth.json")
    store = CredentialStore(kf, str(tmp_path / "none.json"))
    store.save("127.0.0.1:5000", "me", "pw:with:colons")
    assert os.stat(kf).st_mode & 0o777 == 0o600
    cred = store.get("127.0.0.1:5000")
    assert cred is not None and cred.password == "pw:with:colons"
    assert store.remove("127.0.0.1:5000") and store.get("127.0.0.1:5000") is None


def test_bad_auth_field(tmp_path) -> None:
    kf = str(tmp_path / "auth.json")
    _write(kf, {"auths": {"h": {"auth": "!!notbase64"}}}, 0o600)
    with pytest.raises(InvalidArgument, match="base64"):
        CredentialStore(kf, str(tmp_path / "n.json")).get("h")


def _read_all(src) -> bytes:
    out = []
    while chunk := src.read(1 << 16):
        out.append(chunk)
    return b"".join(out)


def test_gzip_multi_member_and_padding() -> None:
    data = gzip.compress(b"a" * 100000) + gzip.compress(b"b" * 5) + b"\0" * 1024
    assert _read_all(decompressor(io.BytesIO(data), "gzip", "l")) == b"a" * 100000 + b"b" * 5


def test_gzip_truncated_and_corrupt() -> None:
    data = gzip.compress(os.urandom(200000))
    with pytest.raises(InvalidArgument, match="ends early"):
        _read_all(decompressor(io.BytesIO(data[:-100]), "gzip", "layer x"))
    bad = bytearray(data)
    bad[5000:5010] = b"\xff" * 10
    with pytest.raises(InvalidArgument, match="layer x"):
        _read_all(decompressor(io.BytesIO(bytes(bad)), "gzip", "layer x"))


def test_zstd_multi_frame() -> None:
    zstandard = pytest.importorskip("zstandard")
    c = zstandard.ZstdCompressor()
    data = c.compress(b"x" * 70000) + c.compress(b"y" * 3)
    assert _read_all(decompressor(io.BytesIO(data), "zstd", "l")) == b"x" * 70000 + b"yyy"
    with pytest.raises(InvalidArgument, match="zstd"):
        _read_all(decompressor(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\xff" * 64), "zstd", "l"))


def test_decompression_output_is_bounded_per_read() -> None:
    # A small gzip of 64 MiB of zeros must come out in bounded pieces, not all at once.
    bomb = gzip.compress(b"\0" * (64 << 20))
    src = decompressor(io.BytesIO(bomb), "gzip", "l")
    assert len(src.read(1 << 20)) <= 1 << 20
