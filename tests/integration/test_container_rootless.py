"""Rootless: an unprivileged user runs a container from `spec --rootless` with a single
uid/gid mapping, without cgroups, with devices bind-mounted instead of created."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import leaks
from tests.support.bundle import chmod_tree_for, new_id
from tests.support.probe import parse_json_line

pytestmark = pytest.mark.privileged

USER = 65534  # nobody: exists on every Debian system, owns nothing


class RootlessEnv:
    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.root = home / "state"
        self.xdg = home / "xdg"
        self.env = {
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(self.xdg),
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), "--root", str(self.root), *args],
            user=USER,
            group=USER,
            extra_groups=[],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def rootless(runtime_binary: Path, rootfs_template: Path) -> Iterator[RootlessEnv]:
    home = Path(tempfile.mkdtemp(prefix="kettle-rootless-"))
    env = RootlessEnv(runtime_binary, home)
    try:
        try:
            probe = subprocess.run(
                [str(runtime_binary), "--version"],
                user=USER,
                group=USER,
                extra_groups=[],
                env=env.env,
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
            )
            failure = probe.stderr.strip()[-300:] if probe.returncode != 0 else ""
        except OSError as exc:  # the exec itself failed: e.g. an interpreter under /root
            failure = str(exc)
        if failure:
            pytest.skip(
                f"uid {USER} cannot run {runtime_binary} here (it or its interpreter is not "
                f"reachable by that user): {failure}"
            )
        for d in (env.root, env.xdg):
            d.mkdir(mode=0o700)
        shutil.copytree(rootfs_template, home / "bundle" / "rootfs", symlinks=True)
        chmod_tree_for(home, USER, USER)
        yield env
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_rootless_run(rootless: RootlessEnv) -> None:
    bundle = rootless.home / "bundle"
    spec = rootless("spec", "--rootless", "--bundle", str(bundle))
    assert spec.returncode == 0, spec.stderr
    config = json.loads((bundle / "config.json").read_text())
    assert config["linux"]["uidMappings"][0]["hostID"] == USER
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/probe"]
    (bundle / "config.json").write_text(json.dumps(config))
    os.lchown(bundle / "config.json", USER, USER)

    cid = new_id("kt-rootless")
    try:
        result = rootless("run", "--bundle", str(bundle), cid)
        assert result.returncode == 0, result.stderr
        report = parse_json_line(result.stdout)
        assert report["uid"] == 0
        assert report["uid_map"].split() == ["0", str(USER), "1"]
        assert report["gid_map"].split() == ["0", str(USER), "1"]
        assert report["ns"]["user"] != os.stat("/proc/self/ns/user").st_ino
    finally:
        rootless("delete", "--force", cid)
    assert leaks.leaks_of(cid, bundle) == []


def test_rootless_default_state_dir_under_xdg_runtime_dir(rootless: RootlessEnv) -> None:
    bundle = rootless.home / "bundle"
    assert rootless("spec", "--rootless", "--bundle", str(bundle)).returncode == 0
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sleep", "600"]
    (bundle / "config.json").write_text(json.dumps(config))
    cid = new_id("kt-rootless")
    binary = str(rootless.binary)

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        # No --root: the runtime must pick a per-user directory it can write.  Output goes to
        # a file: the container keeps the runtime's stdio, so a pipe would never reach EOF.
        with open(bundle / "out", "w") as out:
            proc = subprocess.run(
                [binary, *args],
                user=USER,
                group=USER,
                extra_groups=[],
                env=rootless.env,
                stdout=out,
                stderr=out,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, "", (bundle / "out").read_text()
        )

    try:
        created = call("create", "--bundle", str(bundle), cid)
        assert created.returncode == 0, created.stderr
        found = [p for p in rootless.xdg.rglob(cid)]
        assert found, f"no state for {cid} under XDG_RUNTIME_DIR {rootless.xdg}"
    finally:
        call("delete", "--force", cid)
    assert leaks.leaks_of(cid, bundle) == []
