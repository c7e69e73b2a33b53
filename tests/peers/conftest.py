"""Fixtures for driving real peers (containerd 1.6's runc shim, podman) with the runtime under
test as their OCI runtime."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containerd import Containerd
from tests.support.image import IMAGE_NAME, archive, build_oci_layout
from tests.support.podman import Podman


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/install.sh installs them)")


@pytest.fixture(scope="session")
def image_layout(tmp_path_factory: pytest.TempPathFactory, probe_binary: Path) -> Path:
    """busybox + probe as an OCI image layout, tag `latest`."""
    return build_oci_layout(tmp_path_factory.mktemp("image") / "layout", probe_binary)


@pytest.fixture(scope="session")
def image_oci_archive(image_layout: Path) -> Path:
    return archive(image_layout, image_layout.parent / "image-oci.tar")


@pytest.fixture(scope="session")
def image_docker_archive(image_layout: Path) -> Path:
    """The same image as a docker-archive (skopeo converts locally; keeps the name)."""
    need("skopeo")
    dest = image_layout.parent / "image-docker.tar"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            f"oci:{image_layout}:latest",
            f"docker-archive:{dest}:{IMAGE_NAME}",
        ],
        check=True,
        capture_output=True,
    )
    return dest


@pytest.fixture(scope="module")
def containerd(image_oci_archive: Path) -> Iterator[Containerd]:
    need("containerd", "ctr", "containerd-shim-runc-v2")
    instance = Containerd(Path(tempfile.mkdtemp(prefix="kettle-containerd-")))
    problems: list[str] = []
    try:
        instance.start()
        instance.ctr("images", "import", str(image_oci_archive))
        yield instance
    finally:
        problems = instance.stop()
    assert problems == [], problems


@pytest.fixture(scope="module")
def podman(runtime_binary: Path, image_docker_archive: Path) -> Iterator[Podman]:
    need("podman", "conmon")
    instance = Podman(Path(tempfile.mkdtemp(prefix="kettle-podman-")), runtime_binary)
    problems: list[str] = []
    try:
        instance.setup()
        instance("load", "--input", str(image_docker_archive))
        yield instance
    finally:
        problems = instance.teardown()
    assert problems == [], problems
