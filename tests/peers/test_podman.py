"""podman 4.3 (through conmon) with `--runtime <runtime under test>`."""

from __future__ import annotations

import uuid

import pytest

from tests.support import leaks
from tests.support.image import IMAGE_NAME
from tests.support.podman import Podman

pytestmark = [pytest.mark.peers, pytest.mark.privileged]


def name() -> str:
    return f"kt-podman-{uuid.uuid4().hex[:10]}"


def test_podman_run_rm_echo(podman: Podman) -> None:
    cname = name()
    result = podman("run", "--rm", "--name", cname, *podman.run_args(), IMAGE_NAME, "echo", "hi")
    assert result.stdout == "hi\n"
    assert cname not in podman("ps", "-a", "--format", "{{.Names}}").stdout.split()


@pytest.mark.parametrize("code", [0, 3, 42])
def test_podman_exit_code(podman: Podman, code: int) -> None:
    result = podman(
        "run", "--rm", *podman.run_args(), IMAGE_NAME, "sh", "-c", f"exit {code}", check=False
    )
    assert result.returncode == code, result.stderr


def test_podman_detached_exec_stop_rm(podman: Podman) -> None:
    cname = name()
    cid = podman("run", "-d", "--name", cname, *podman.run_args(), IMAGE_NAME, "sleep", "600")
    cid_full = cid.stdout.strip()
    try:
        assert podman("exec", cname, "echo", "exec-ok").stdout == "exec-ok\n"
        assert podman("exec", cname, "sh", "-c", "exit 5", check=False).returncode == 5
        status = podman("inspect", "--format", "{{.State.Status}}", cname).stdout.strip()
        assert status == "running"
        podman("stop", "--time", "1", cname)
        status = podman("inspect", "--format", "{{.State.Status}}", cname).stdout.strip()
        assert status in ("exited", "stopped")
    finally:
        podman("rm", "--force", "--time", "0", cname, check=False)
    assert leaks.processes_naming(cid_full) == []
    assert leaks.cgroups_naming(cid_full) == []


def test_podman_ulimits_and_user(podman: Podman) -> None:
    result = podman(
        "run", "--rm", "--user", "1000:1000", *podman.run_args(), IMAGE_NAME, "sh", "-c",
        "id -u; ulimit -n",
    )  # fmt: skip
    assert result.stdout.split() == ["1000", "1024"]
