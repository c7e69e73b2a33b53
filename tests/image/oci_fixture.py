"""Building test images: layer tarballs from entry lists, OCI layouts, registries to push to."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

USER, PASSWORD = "kettle", "s3cret-pw"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass
class E:
    """One tar entry."""

    name: str
    type: str = "file"  # file dir symlink hardlink char block fifo
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    mtime: int = 1_600_000_000
    xattrs: dict[str, bytes] = field(default_factory=dict)
    major: int = 0
    minor: int = 0


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def layer_tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _TYPES[e.type]
            ti.mode = e.mode
            ti.uid, ti.gid = e.uid, e.gid
            ti.mtime = e.mtime
            ti.linkname = e.linkname
            ti.devmajor, ti.devminor = e.major, e.minor
            if e.xattrs:
                ti.pax_headers = {
                    "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                    for k, v in e.xattrs.items()
                }
            if e.type == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout directory written by hand."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.refs: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> dict[str, Any]:
        d = digest(data)
        with open(os.path.join(self.path, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        return {"digest": d, "size": len(data)}

    def image(
        self,
        layers: list[bytes],
        compression: str = "gzip",
        config: dict[str, Any] | None = None,
        arch: str = "amd64",
        variant: str = "",
    ) -> dict[str, Any]:
        """Store layers (uncompressed tars), config and manifest; the manifest's descriptor."""
        descs = []
        for tar in layers:
            d = self.blob(compress(tar, compression))
            descs.append({"mediaType": LAYER_TYPES[compression], **d})
        cfg: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in layers]},
            "config": config or {},
            "created": "2024-01-01T00:00:00Z",
        }
        if variant:
            cfg["variant"] = variant
        cdesc = {"mediaType": OCI_CONFIG, **self.blob(json.dumps(cfg).encode())}
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": cdesc,
            "layers": descs,
        }
        plat = {"architecture": arch, "os": "linux"}
        if variant:
            plat["variant"] = variant
        return {
            "mediaType": OCI_MANIFEST,
            **self.blob(json.dumps(manifest).encode()),
            "platform": plat,
        }

    def index(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return {"mediaType": OCI_INDEX, **self.blob(json.dumps(doc).encode())}

    def tag(self, desc: dict[str, Any], tag: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.refs = [
            r for r in self.refs if r["annotations"]["org.opencontainers.image.ref.name"] != tag
        ]
        self.refs.append(entry)
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"registry exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"registry did not listen on {port}")


@dataclass
class Registry:
    """A docker-registry process serving one storage directory."""

    host: str
    port: int
    storage: str
    config: str
    proc: subprocess.Popen[bytes] | None = None
    tls: bool = False
    ca_dir: str = ""
    creds: str = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/bin/docker-registry", "serve", self.config],
            stdout=subprocess.DEVNULL,
            stderr=open(self.config + ".log", "ab"),  # noqa: SIM115
        )
        wait_port(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def push(self, layout: str, tag: str, name: str, all_: bool = False) -> str:
        ref = f"{self.host}/{name}:{tag}"
        cmd = [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=" + ("true" if self.tls else "false"),
        ]
        if self.tls:
            cmd += ["--dest-cert-dir", self.ca_dir]
        if self.creds:
            cmd += ["--dest-creds", self.creds]
        if all_:
            cmd.append("--all")
        cmd += [f"oci:{layout}:{tag}", f"docker://{ref}"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        return ref

    def blob_path(self, digest_: str) -> str:
        hexd = digest_.split(":", 1)[1]
        return os.path.join(
            self.storage, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data"
        )


def write_registry_config(path: str, port: int, storage: str, extra: str = "") -> None:
    with open(path, "w") as f:
        f.write(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            "storage:\n"
            "  delete:\n    enabled: true\n"
            f"  filesystem:\n    rootdirectory: {storage}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + extra
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues RS256 JWTs docker-registry accepts (x5c chain = our self-signed cert)."""

    def __init__(self, d: str, service: str, issuer: str) -> None:
        self.d = d
        self.service = service
        self.issuer = issuer
        self.requests: list[dict[str, Any]] = []
        self.lifetime = 300
        #: lifetimes for the next tokens (a negative one is already expired), then lifetime.
        self.lifetimes: list[int] = []
        der = subprocess.run(
            ["openssl", "x509", "-in", os.path.join(d, "token.crt"), "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        self.x5c = base64.b64encode(der).decode()
        self.port = 0
        self.httpd: http.server.ThreadingHTTPServer | None = None

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", os.path.join(self.d, "token.key")],
            input=signing.encode(), check=True, capture_output=True,
        ).stdout  # fmt: skip
        return f"{signing}.{_b64url(sig)}"

    def start(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query)
                auth = self.headers.get("Authorization", "")
                user = ""
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if (u, p) != (USER, PASSWORD):
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = u
                server.requests.append({"scope": q.get("scope", []), "user": user})
                access = []
                for scope in q.get("scope", []):
                    for part in scope.split(" "):
                        kind, _, rest = part.partition(":")
                        name, _, actions = rest.rpartition(":")
                        allowed = [a for a in actions.split(",") if a == "pull" or user]
                        access.append({"type": kind, "name": name, "actions": allowed})
                now = int(time.time())
                life = server.lifetimes.pop(0) if server.lifetimes else server.lifetime
                claims = {
                    "iss": server.issuer, "sub": user, "aud": server.service,
                    "exp": now + life, "nbf": now - 10, "iat": now,
                    "jti": uuid.uuid4().hex, "access": access,
                }  # fmt: skip
                body = json.dumps({"token": server.sign(claims), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


@contextlib.contextmanager
def tmpfs(path: str, size: str) -> Iterator[str]:
    """A small tmpfs mounted for a test, always unmounted."""
    from kettle import syscalls

    os.makedirs(path, exist_ok=True)
    syscalls.mount("tmpfs", path, "tmpfs", syscalls.MS_NOSUID, f"size={size},mode=0755")
    try:
        yield path
    finally:
        syscalls.umount2(path, syscalls.MNT_DETACH)
        os.rmdir(path)


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
