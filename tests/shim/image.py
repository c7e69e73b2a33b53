"""A busybox OCI image archive built from the host's /bin/busybox (busybox-static).

One layer: /bin/busybox, a symlink for each applet it lists, and the few files a shell and
`id` expect.  The archive is an OCI image layout in a tar holding two images of that layer,
IMAGE_NAME (command `sh`) and PAUSE_NAME (command `sleep`, a CRI sandbox image), named through
the ``io.containerd.image.name`` annotation that `ctr images import` reads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

IMAGE_NAME = "docker.io/kettle/busybox:shim-test"
#: the same layer with `sleep` as its command: a pod sandbox ("pause") image for CRI
PAUSE_NAME = "docker.io/kettle/pause:shim-test"
BUSYBOX = Path("/bin/busybox")

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer() -> bytes:
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:

        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = mode
            tf.addfile(ti)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = mode
            tf.addfile(ti, io.BytesIO(data))

        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "run", "var"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet == "busybox":
                continue
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "busybox"
            tf.addfile(ti)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\nnobody:x:65534:\n")
    return buf.getvalue()


def build_archive(dest: Path) -> Path:
    """Write the image archive to dest; returns dest."""
    layout = dest.parent / (dest.name + ".layout")
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = _digest(data)
        (blobs / digest.split(":", 1)[1]).write_bytes(data)
        return digest

    raw = _layer()
    gz = gzip.compress(raw, mtime=0)
    layer_digest = put(gz)
    manifests = []
    for name, cmd in ((IMAGE_NAME, ["sh"]), (PAUSE_NAME, ["sleep", "2147483647"])):
        config = {
            "architecture": _ARCH.get(os.uname().machine, os.uname().machine),
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"],
                "Cmd": cmd,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]},
        }
        config_bytes = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": len(gz),
                }
            ],
        }
        manifest_bytes = json.dumps(manifest).encode()
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
            }
        )
    index = {"schemaVersion": 2, "manifests": manifests}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with tarfile.open(dest, "w") as tf:
        for path in sorted(layout.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    return dest
