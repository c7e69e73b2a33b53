"""A busybox image built locally (no registry, no network) as an OCI layout and archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path

from tests.support.bundle import build_rootfs

IMAGE_NAME = "docker.io/kettle-test/busybox:latest"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def _layer(rootfs: Path) -> tuple[bytes, str]:
    """A gzipped tar of rootfs with reproducible metadata; returns (gz, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0), f"sha256:{hashlib.sha256(data).hexdigest()}"


def build_oci_layout(dest: Path, probe: Path | None = None, name: str = IMAGE_NAME) -> Path:
    """An OCI image layout at `dest` holding one image `name` (busybox + probe)."""
    rootfs = build_rootfs(dest.parent / f"{dest.name}-rootfs", probe)
    dest.mkdir(parents=True)
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layer, diff_id = _layer(rootfs)
    layer_digest, layer_size = _blob(dest, layer)
    config = {
        "architecture": _ARCH,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "kettle tests: busybox-static"}],
    }
    config_digest, config_size = _blob(dest, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = _blob(dest, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": _ARCH, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
            }
        ],
    }
    (dest / "index.json").write_text(json.dumps(index))
    return dest


def archive(layout: Path, dest: Path) -> Path:
    """The layout as a tar file (`ctr images import`, `podman load` of an oci-archive)."""
    with tarfile.open(dest, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(str(path), arcname=str(path.relative_to(layout)), recursive=False)
    return dest
