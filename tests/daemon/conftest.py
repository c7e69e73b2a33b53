"""A real kettled, kctl, shims and a local registry (docker-registry) with a busybox image.

Everything is private to the session: a registry on 127.0.0.1, kettled's root, state and
socket in a temporary directory, and a shim namespace of its own (so the shims, their sockets,
runtime state and container cgroups are all told apart from anyone else's).  The teardown
removes every container, stops kettled, then checks that no shim, mount or cgroup is left,
cleaning up and failing if one is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.image.oci_fixture import Registry, free_port, write_registry_config
from tests.support import bundle as support_bundle
from tests.support import image as support_image
from tests.support.kettled import BIN, CGROUP_ROOT, SHIM_STATE, Kettled

__all__ = ["BIN", "CGROUP_ROOT", "SHIM_STATE", "Image", "Kettled", "wait_for"]

PASSWD = "alice:x:1500:1600:Alice:/home/alice:/bin/sh\n"
GROUP = "alices:x:1600:\nstaff:x:50:alice,bob\nwheel:x:10:\n"


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("/usr/bin/docker-registry", "skopeo", str(BIN / "kettled"), str(BIN / "kctl")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")


@dataclass
class Image:
    ref: str
    registry: str


def _build_layout(dest: Path) -> Path:
    """tests.support's busybox layout, with users and groups for kctl run -u to resolve."""
    original = support_bundle.build_rootfs

    def with_users(rootfs: Path, probe: Path | None = None) -> Path:
        out = original(rootfs, probe)
        with (out / "etc" / "passwd").open("a") as f:
            f.write(PASSWD)
        with (out / "etc" / "group").open("a") as f:
            f.write(GROUP)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(support_image, "build_rootfs", with_users)
        return support_image.build_oci_layout(dest)


@pytest.fixture(scope="session")
def daemon_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kettle-daemon-test-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def image(daemon_tmp: Path) -> Iterator[Image]:
    """A plain-HTTP registry serving kettle-test/busybox:latest."""
    _need()
    layout = _build_layout(daemon_tmp / "layout")
    port = free_port()
    config = daemon_tmp / "registry.yml"
    storage = daemon_tmp / "registry"
    write_registry_config(str(config), port, str(storage))
    reg = Registry(f"127.0.0.1:{port}", port, str(storage), str(config))
    reg.start()
    try:
        ref = reg.push(str(layout), "latest", "kettle-test/busybox")
        yield Image(ref=ref, registry=reg.host)
    finally:
        reg.kill()


@pytest.fixture(scope="session")
def kettled(daemon_tmp: Path, image: Image) -> Iterator[Kettled]:
    k = Kettled(daemon_tmp / "kettled", image.registry)
    try:
        k.start()
        yield k
    finally:
        leaks = k.cleanup()
        if leaks:
            pytest.fail(f"left behind: {leaks}\n{k.log.read_text()[-3000:]}")


def wait_for(check: object, what: str, timeout: float = 30) -> None:
    """Poll check() until it is true (a deadline, not a speed assertion)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
