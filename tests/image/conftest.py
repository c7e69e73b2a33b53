"""Fixtures for the image tests: local registries (plain, TLS + basic auth, token auth) and
images built from busybox-static, pushed with skopeo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from oci_fixture import (
    PASSWORD,
    USER,
    E,
    Layout,
    Registry,
    TokenServer,
    free_port,
    layer_tar,
    write_registry_config,
)

BUSYBOX = "/bin/busybox"


def _need(*binaries: str) -> None:
    for b in binaries:
        if shutil.which(b) is None and not os.path.exists(b):
            pytest.skip(f"{b} is not installed")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def have_zstd() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def image_tmp() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="kettle-image-tests-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- images ---------------------------------------------------------------------------------


def busybox_layer() -> bytes:
    with open(BUSYBOX, "rb") as f:
        data = f.read()
    entries = [
        E("bin", "dir", mode=0o755),
        E("bin/busybox", data=data, mode=0o755),
        E("bin/sh", "symlink", linkname="busybox"),
        E("bin/ls", "symlink", linkname="/bin/busybox"),
        E("etc", "dir", mode=0o755),
        E(
            "etc/passwd",
            data=b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        ),
        E("etc/group", data=b"root:x:0:\nuser:x:1000:\n"),
        E("tmp", "dir", mode=0o1777),
        E("root", "dir", mode=0o700),
        E("home", "dir", mode=0o755),
        E("home/user", "dir", mode=0o750, uid=1000, gid=1000),
    ]
    return layer_tar(entries)


def rich_layers() -> list[bytes]:
    """Three layers with whiteouts, an opaque dir, hardlinks, symlinks, devices and xattrs."""
    l1 = layer_tar(
        [
            E("etc", "dir", mode=0o755),
            E("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
            E("etc/shadow", data=b"root:*:1::::::\n", mode=0o640, gid=42),
            E("etc/motd", data=b"hello\n"),
            E("usr", "dir", mode=0o755),
            E("usr/bin", "dir", mode=0o755),
            E("usr/bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o755),
            E("usr/bin/su", data=b"not really su\n", mode=0o4755),
            E("usr/bin/sgid", data=b"sgid\n", mode=0o2755, gid=5),
            E("usr/bin/tool-hard", "hardlink", linkname="usr/bin/tool"),
            E("usr/lib", "dir", mode=0o750, uid=3, gid=3),
            E("usr/lib/libx.so.1", data=b"\x7fELF fake library" * 100),
            E("usr/lib/libx.so", "symlink", linkname="libx.so.1"),
            E("lib", "symlink", linkname="usr/lib"),
            E("opt", "dir", mode=0o755),
            E("opt/app", "dir", mode=0o755),
            E("opt/app/old1", data=b"old one\n"),
            E("opt/app/old2", data=b"old two\n"),
            E("opt/app/sub", "dir", mode=0o700),
            E("opt/app/sub/deep", data=b"deep\n"),
            E("var", "dir", mode=0o755),
            E("var/lib", "dir", mode=0o755),
            E("var/lib/data", "dir", mode=0o755),
            E("var/lib/data/db", data=b"x" * 10000, uid=999, gid=999, mode=0o600),
            E("dev", "dir", mode=0o755),
            E("dev/null", "char", mode=0o666, major=1, minor=3),
            E("dev/loopx", "block", mode=0o660, major=7, minor=200, gid=6),
            E("dev/fifo", "fifo", mode=0o600),
            E("xattr-file", data=b"has xattrs\n", xattrs={"user.kettle": b"yes"}),
            E("empty", data=b""),
        ]
    )
    l2 = layer_tar(
        [
            E("etc", "dir", mode=0o755),
            E("etc/.wh.motd"),
            E("etc/hostname", data=b"kettle\n"),
            E("opt", "dir", mode=0o755),
            E("opt/app", "dir", mode=0o750),
            E("opt/app/.wh..wh..opq"),
            E("opt/app/new", data=b"new file\n"),
            E("var/lib", "dir", mode=0o700),
            E("var/lib/.wh.data"),
            E("usr/bin/tool", data=b"#!/bin/sh\necho tool v2\n", mode=0o755, mtime=1_700_000_000),
            E("usr/bin/tool2", "hardlink", linkname="usr/bin/tool"),
            # usr/lib is not listed: it keeps layer 1's owner and mode in the merged view.
            E("usr/lib/libnew.so", data=b"new lib"),
        ]
    )
    l3 = layer_tar(
        [
            E("var/lib/data", "dir", mode=0o755, uid=7, gid=7),
            E("var/lib/data/fresh", data=b"fresh\n"),
            E("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n"),
            E("home", "dir", mode=0o755),
            E("home/user", "dir", mode=0o700, uid=1000, gid=1000),
        ]
    )
    return [l1, l2, l3]


RICH_CONFIG: dict[str, Any] = {
    "User": "1000:1000",
    "Env": ["PATH=/usr/bin:/bin", "GREETING=hello"],
    "WorkingDir": "/opt/app",
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo hi"],
    "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
    "Labels": {"org.example.kind": "test"},
    "StopSignal": "SIGTERM",
    "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 3},
}


@pytest.fixture(scope="session")
def layouts(image_tmp: str) -> dict[str, Any]:
    """OCI layouts: busybox, rich (gzip), rich-zstd, multi (index of two arches), plain."""
    path = os.path.join(image_tmp, "layout")
    lay = Layout(path)
    out: dict[str, Any] = {"path": path}
    bb = lay.image([busybox_layer()], "gzip", {"Cmd": ["/bin/sh"]})
    lay.tag(bb, "busybox")
    out["busybox"] = bb
    rich = lay.image(rich_layers(), "gzip", RICH_CONFIG)
    lay.tag(rich, "rich")
    out["rich"] = rich
    if have_zstd():
        rz = lay.image(rich_layers(), "zstd", RICH_CONFIG)
        lay.tag(rz, "rich-zstd")
        out["rich-zstd"] = rz
    plain = lay.image(rich_layers(), "", RICH_CONFIG)
    lay.tag(plain, "rich-plain")
    out["rich-plain"] = plain
    amd = lay.image([layer_tar([E("arch", data=b"amd64\n")])], "gzip", arch="amd64")
    arm = lay.image([layer_tar([E("arch", data=b"arm64\n")])], "gzip", arch="arm64", variant="v8")
    att = dict(lay.image([layer_tar([E("attestation", data=b"{}")])], "gzip"))
    att["platform"] = {"architecture": "unknown", "os": "unknown"}
    att["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
    multi = lay.index([att, arm, amd])
    lay.tag(multi, "multi")
    out["multi"] = multi
    return out


# --- registries -----------------------------------------------------------------------------


def _start(image_tmp: str, extra: str = "", name: str = "") -> Registry:
    _need("/usr/bin/docker-registry", "skopeo")
    d = os.path.join(image_tmp, f"registry-{name or uuid.uuid4().hex[:8]}")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    config = os.path.join(d, "config.yml")
    write_registry_config(config, port, os.path.join(d, "storage"), extra)
    reg = Registry(f"127.0.0.1:{port}", port, os.path.join(d, "storage"), config)
    reg.start()
    return reg


@pytest.fixture(scope="session")
def registry(image_tmp: str, layouts: dict[str, Any]) -> Iterator[Registry]:
    """A plain-HTTP registry with every test image pushed."""
    reg = _start(image_tmp, name="plain")
    try:
        for tag in ("busybox", "rich", "rich-zstd", "rich-plain"):
            if tag in layouts:
                reg.push(layouts["path"], tag, "test/img")
        reg.push(layouts["path"], "multi", "test/multi", all_=True)
        yield reg
    finally:
        reg.kill()


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def _selfsigned(d: str, name: str, subject: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)  # fmt: skip


def _htpasswd_line(user: str, password: str) -> str:
    if shutil.which("htpasswd"):
        out = subprocess.run(
            ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
        )
        return out.stdout.strip()
    try:
        import bcrypt

        return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}"
    except ImportError:
        pytest.skip("no htpasswd and no bcrypt module to write a bcrypt htpasswd line")


@pytest.fixture(scope="session")
def tls_registry(image_tmp: str, layouts: dict[str, Any]) -> Iterator[Registry]:
    """HTTPS (own CA) with htpasswd basic auth; certs.d layout under <dir>/certs.d."""
    _need("openssl")
    d = os.path.join(image_tmp, "tls")
    os.makedirs(d)
    _selfsigned(d, "ca", "/CN=kettle test ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=d)  # fmt: skip
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write(_htpasswd_line(USER, PASSWORD) + "\n")
    extra = (
        f"  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n"
        f"auth:\n  htpasswd:\n    realm: kettle-test\n    path: {d}/htpasswd\n"
    )
    reg = _start(image_tmp, extra, name="tls")
    reg.tls = True
    reg.creds = f"{USER}:{PASSWORD}"
    reg.ca_dir = os.path.join(d, "skopeo-certs")
    os.makedirs(reg.ca_dir)
    shutil.copy(os.path.join(d, "ca.crt"), reg.ca_dir)
    certs_d = os.path.join(d, "certs.d", reg.host)
    os.makedirs(certs_d)
    shutil.copy(os.path.join(d, "ca.crt"), certs_d)
    try:
        reg.push(layouts["path"], "busybox", "secure/busybox")
        yield reg
    finally:
        reg.kill()


@pytest.fixture(scope="session")
def token_registry(
    image_tmp: str, layouts: dict[str, Any]
) -> Iterator[tuple[Registry, TokenServer]]:
    """docker-registry with token auth, and our token server (basic creds -> JWT)."""
    _need("openssl")
    d = os.path.join(image_tmp, "token")
    os.makedirs(d)
    _selfsigned(d, "token", "/CN=kettle token")
    ts = TokenServer(d, "kettle-registry", "kettle-issuer")
    ts.start()
    extra = (
        "auth:\n  token:\n"
        f"    realm: http://127.0.0.1:{ts.port}/token\n"
        "    service: kettle-registry\n    issuer: kettle-issuer\n"
        f"    rootcertbundle: {d}/token.crt\n"
    )
    reg = None
    try:
        reg = _start(image_tmp, extra, name="token")
        reg.creds = f"{USER}:{PASSWORD}"
        reg.push(layouts["path"], "rich", "tok/rich")
        ts.requests.clear()
        yield reg, ts
    finally:
        if reg is not None:
            reg.kill()
        ts.stop()


@pytest.fixture
def spare_registry(image_tmp: str, registry: Registry) -> Iterator[Registry]:
    """A second docker-registry process over a copy of the session registry's storage (a test
    may kill or corrupt it)."""
    d = os.path.join(image_tmp, f"spare-{uuid.uuid4().hex[:8]}")
    os.makedirs(d)
    storage = os.path.join(d, "storage")
    shutil.copytree(registry.storage, storage)
    port = free_port()
    config = os.path.join(d, "config.yml")
    write_registry_config(config, port, storage)
    reg = Registry(f"127.0.0.1:{port}", port, storage, config)
    reg.start()
    try:
        yield reg
    finally:
        reg.kill()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def need_root() -> None:
    _need_root()
