"""containerd 1.6 with its runc shim (io.containerd.runc.v2) using the runtime under test as
BinaryName (`ctr run --runc-binary`)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.support import leaks
from tests.support.containerd import Containerd
from tests.support.image import IMAGE_NAME
from tests.support.probe import parse_json_line

pytestmark = [pytest.mark.peers, pytest.mark.privileged]


def run_flags(containerd: Containerd, runtime_binary: Path) -> list[str]:
    return [
        "--runtime",
        "io.containerd.runc.v2",
        "--runc-binary",
        str(runtime_binary),
        "--runc-root",
        str(containerd.runc_root),
    ]


def new_cid() -> str:
    return f"kt-ctr-{uuid.uuid4().hex[:10]}"


def task_status(containerd: Containerd, cid: str) -> str | None:
    for line in containerd.ctr("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return None


def assert_clean(containerd: Containerd, cid: str) -> None:
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()
    assert task_status(containerd, cid) is None
    deadline = time.monotonic() + 10
    while leaks.leaks_of(cid, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leaks.leaks_of(cid, None) == []


def test_image_imported(containerd: Containerd) -> None:
    assert IMAGE_NAME in containerd.ctr("images", "ls", "-q").stdout.split()


def test_ctr_run_rm_prints_from_inside(containerd: Containerd, runtime_binary: Path) -> None:
    cid = new_cid()
    result = containerd.ctr(
        "run",
        "--rm",
        *run_flags(containerd, runtime_binary),
        IMAGE_NAME,
        cid,
        "/bin/sh",
        "-c",
        "echo hello from inside; hostname",
    )
    assert result.stdout.splitlines()[0] == "hello from inside"
    assert_clean(containerd, cid)


def test_ctr_run_exit_code(containerd: Containerd, runtime_binary: Path) -> None:
    cid = new_cid()
    result = containerd.ctr(
        "run",
        "--rm",
        *run_flags(containerd, runtime_binary),
        IMAGE_NAME,
        cid,
        "/bin/sh",
        "-c",
        "exit 3",
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert_clean(containerd, cid)


def test_ctr_run_probe(containerd: Containerd, runtime_binary: Path) -> None:
    cid = new_cid()
    result = containerd.ctr(
        "run", "--rm", *run_flags(containerd, runtime_binary), IMAGE_NAME, cid, "/bin/probe"
    )
    report = parse_json_line(result.stdout)
    assert report["pid"] == 1
    assert f"/{containerd.namespace}/{cid}" in report["cgroup"] or report["cgroup"]
    assert_clean(containerd, cid)


def test_ctr_detached_exec_kill_delete(containerd: Containerd, runtime_binary: Path) -> None:
    cid = new_cid()
    containerd.ctr(
        "run", "-d", *run_flags(containerd, runtime_binary), IMAGE_NAME, cid, "/bin/sleep", "600"
    )
    try:
        assert task_status(containerd, cid) == "RUNNING"
        result = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "/bin/echo", "exec-ok")
        assert result.stdout.strip() == "exec-ok"
        result = containerd.ctr(
            "task", "exec", "--exec-id", "e2", cid, "/bin/sh", "-c", "exit 4", check=False
        )
        assert result.returncode == 4
        pids = json.loads(containerd.ctr("task", "ps", cid).stdout.split("\n", 1)[0] and "[]")
        assert pids == []  # (ctr task ps prints a table; checked below)
        table = containerd.ctr("task", "ps", cid).stdout.splitlines()
        assert len(table) >= 2
        containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
        deadline = time.monotonic() + 20
        while task_status(containerd, cid) != "STOPPED":
            assert time.monotonic() < deadline, task_status(containerd, cid)
            time.sleep(0.1)
        containerd.ctr("task", "delete", cid)
        containerd.ctr("containers", "rm", cid)
    finally:
        containerd.ctr("task", "delete", "--force", cid, check=False)
        containerd.ctr("containers", "rm", cid, check=False)
    assert_clean(containerd, cid)


def test_ctr_pause_resume(containerd: Containerd, runtime_binary: Path) -> None:
    cid = new_cid()
    containerd.ctr(
        "run", "-d", *run_flags(containerd, runtime_binary), IMAGE_NAME, cid, "/bin/sleep", "600"
    )
    try:
        containerd.ctr("task", "pause", cid)
        assert task_status(containerd, cid) == "PAUSED"
        containerd.ctr("task", "resume", cid)
        assert task_status(containerd, cid) == "RUNNING"
    finally:
        containerd.ctr("task", "kill", "--signal", "SIGKILL", cid, check=False)
        deadline = time.monotonic() + 20
        while task_status(containerd, cid) not in ("STOPPED", None):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        containerd.ctr("task", "delete", "--force", cid, check=False)
        containerd.ctr("containers", "rm", cid, check=False)
    assert_clean(containerd, cid)
