"""Fixtures for the shim tests: the busybox image and a private containerd driving the shim."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shim.ctd import Containerd, shim_script
from tests.shim.image import BUSYBOX, build_archive


def need_peers() -> None:
    missing = [p for p in ("containerd", "ctr") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/install.sh installs them)")
    if not BUSYBOX.is_file():
        pytest.skip(f"{BUSYBOX} is missing (Debian package busybox-static)")
    if not shim_script().is_file():
        pytest.skip(
            f"{shim_script()} is missing: reinstall kettle into the venv (pip install -e .)"
        )


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_peers()
    return build_archive(tmp_path_factory.mktemp("shim-image") / "busybox.tar")


def _containerd(archive: Path, **kwargs: object) -> Iterator[Containerd]:
    need_peers()
    instance = Containerd(**kwargs)  # type: ignore[arg-type]
    problems: list[str] = []
    try:
        instance.start()
        instance.ctr("images", "import", str(archive))
        yield instance
    finally:
        problems = instance.stop()
    assert problems == [], problems


@pytest.fixture(scope="module")
def containerd(busybox_archive: Path) -> Iterator[Containerd]:
    """A private containerd (CRI off) with the busybox image; torn down after the module."""
    yield from _containerd(busybox_archive)
