"""ps, list, pause/resume, update, events, spec, features, --version, errors and --log."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.support import cgroups
from tests.support.bundle import new_id
from tests.support.containers import Containers
from tests.support.runtime import Runtime
from tests.support.waiting import wait_for

pytestmark = pytest.mark.privileged


def started_sleeper(containers: Containers, *extra: str) -> tuple[str, int]:
    script = "sleep 600 & echo ready; wait"
    bundle = containers.bundle("/bin/sh", "-c", script)
    state = containers.start(bundle, *extra)
    out = bundle.path / "create.out"
    wait_for(lambda: "ready" in out.read_text(), what="container ready")
    return bundle.id, state["pid"]


# ---- ps / list --------------------------------------------------------------------------------


def test_ps_json_lists_host_pids(runtime: Runtime, containers: Containers) -> None:
    cid, pid = started_sleeper(containers)
    result = runtime("ps", "--format", "json", cid)
    pids = json.loads(result.stdout)
    assert isinstance(pids, list) and all(isinstance(p, int) for p in pids)
    assert pid in pids and len(pids) == 2
    child = next(p for p in pids if p != pid)
    assert Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"600"]


def test_ps_table(runtime: Runtime, containers: Containers) -> None:
    cid, pid = started_sleeper(containers)
    lines = runtime("ps", cid).stdout.splitlines()
    assert "PID" in lines[0].split()
    column = lines[0].split().index("PID")
    assert str(pid) in [line.split()[column] for line in lines[1:]]
    assert any("sleep" in line for line in lines[1:])


def test_list_formats(runtime_binary: Path, containers: Containers, tmp_path: Path) -> None:
    # A root of its own, so the listing holds exactly this test's containers.
    rt = Runtime(runtime_binary, tmp_path / "root")
    empty = rt("list", "--format", "json").stdout.strip()
    assert empty in ("null", "[]")
    private = Containers(rt, containers.bundles)
    try:
        running = private.bundle("/bin/sleep", "600")
        created = private.bundle("/bin/sleep", "600")
        private.start(running)
        private.create(created)
        states = {s["id"]: s for s in json.loads(rt("list", "--format", "json").stdout)}
        assert set(states) == {running.id, created.id}
        assert states[running.id]["status"] == "running"
        assert states[created.id]["status"] == "created"
        assert states[running.id]["bundle"] == str(running.path)
        assert states[running.id]["pid"] > 0

        assert sorted(rt("list", "-q").stdout.split()) == sorted([running.id, created.id])
        table = rt("list").stdout.splitlines()
        assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert rows[running.id][2] == "running" and rows[created.id][2] == "created"
    finally:
        problems = private.cleanup()
    assert problems == []


# ---- pause / resume ---------------------------------------------------------------------------


def test_pause_and_resume(runtime: Runtime, containers: Containers) -> None:
    cid, pid = started_sleeper(containers)
    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    freezer = cgroups.cgroup_file(pid, "freezer", "freezer.state")
    if freezer.name == "freezer.state":
        assert freezer.read_text().strip() == "FROZEN"
    else:
        assert "frozen 1" in freezer.with_name("cgroup.events").read_text()
    runtime("resume", cid)
    assert runtime.state(cid)["status"] == "running"
    if freezer.name == "freezer.state":
        assert freezer.read_text().strip() == "THAWED"
    else:
        assert "frozen 0" in freezer.with_name("cgroup.events").read_text()


def test_resume_of_running_fails(runtime: Runtime, containers: Containers) -> None:
    cid, _ = started_sleeper(containers)
    assert runtime("resume", cid, check=False).returncode != 0


# ---- update -----------------------------------------------------------------------------------

MiB = 1024 * 1024


def memory_limit(pid: int) -> int:
    value = cgroups.read_limit(pid, "memory", "memory.limit_in_bytes")
    return -1 if value == "max" else int(value)


def pids_limit(pid: int) -> str:
    return cgroups.read_limit(pid, "pids", "pids.max")


def test_update_resources_file(runtime: Runtime, containers: Containers, tmp_path: Path) -> None:
    cid, pid = started_sleeper(containers)
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"memory": {"limit": 96 * MiB}, "pids": {"limit": 50}}))
    runtime("update", "--resources", str(resources), cid)
    assert memory_limit(pid) == 96 * MiB
    assert pids_limit(pid) == "50"


def test_update_resources_stdin(runtime: Runtime, containers: Containers) -> None:
    cid, pid = started_sleeper(containers)
    runtime("update", "--resources", "-", cid, input=json.dumps({"pids": {"limit": 77}}))
    assert pids_limit(pid) == "77"


def test_update_individual_flags(runtime: Runtime, containers: Containers) -> None:
    cid, pid = started_sleeper(containers)
    runtime("update", "--memory", str(80 * MiB), "--pids-limit", "40", cid)
    assert memory_limit(pid) == 80 * MiB
    assert pids_limit(pid) == "40"


# ---- events -----------------------------------------------------------------------------------


def test_events_stats_shape(runtime: Runtime, containers: Containers) -> None:
    cid, _ = started_sleeper(containers)
    result = runtime("events", "--stats", cid, timeout=20)
    event = json.loads(result.stdout)
    assert event["type"] == "stats"
    assert event["id"] == cid
    data = event["data"]
    assert isinstance(data["cpu"]["usage"]["total"], int)
    assert data["cpu"]["usage"]["total"] > 0
    assert isinstance(data["memory"]["usage"]["usage"], int)
    assert data["memory"]["usage"]["usage"] > 0
    assert data["pids"]["current"] == 2


# ---- spec / features / version ----------------------------------------------------------------


def test_spec_writes_default_config(runtime: Runtime, tmp_path: Path) -> None:
    runtime("spec", "--bundle", str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ociVersion"].startswith("1.")
    assert config["process"]["args"] == ["sh"]
    assert config["root"]["path"] == "rootfs"
    types = {n["type"] for n in config["linux"]["namespaces"]}
    assert {"pid", "mount", "ipc", "uts", "network"} <= types
    assert "/proc" in {m["destination"] for m in config["mounts"]}
    # An existing config.json is not overwritten.
    before = (tmp_path / "config.json").read_text()
    assert runtime("spec", "--bundle", str(tmp_path), check=False).returncode != 0
    assert (tmp_path / "config.json").read_text() == before


def test_spec_in_cwd(runtime: Runtime, tmp_path: Path) -> None:
    runtime("spec", cwd=tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["process"]["args"] == ["sh"]


def test_spec_rootless(runtime: Runtime, tmp_path: Path) -> None:
    runtime("spec", "--rootless", "--bundle", str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    linux = config["linux"]
    types = {n["type"] for n in linux["namespaces"]}
    assert "user" in types and "network" not in types
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in linux or "devices" not in linux.get("resources", {})
    sys_mount = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert "rbind" in sys_mount["options"] or sys_mount["type"] == "none"


def test_features_json(runtime: Runtime) -> None:
    features = json.loads(runtime("features").stdout)
    assert features["ociVersionMin"].startswith("1.0")
    assert features["ociVersionMax"].startswith("1.")
    assert set(features["hooks"]) >= {
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    }
    assert {"bind", "rbind", "ro", "nosuid", "nodev", "noexec"} <= set(features["mountOptions"])
    linux = features["linux"]
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} <= set(linux["namespaces"])
    assert {"CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_KILL"} <= set(linux["capabilities"])
    assert set(linux["cgroup"]) >= {"v1", "v2", "systemd", "systemdUser"}
    assert linux["cgroup"]["v1"] is True
    assert linux["seccomp"]["enabled"] is True
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL"} <= set(linux["seccomp"]["actions"])
    assert "SCMP_CMP_EQ" in linux["seccomp"]["operators"]
    assert "SCMP_ARCH_X86_64" in linux["seccomp"]["archs"] or os.uname().machine != "x86_64"
    assert isinstance(features["annotations"], dict)


def test_version_lines(runtime: Runtime) -> None:
    lines = runtime("--version").stdout.splitlines()
    assert len(lines) >= 3
    assert re.match(r"^\S+ version \S+", lines[0])
    assert any(line.startswith("commit: ") for line in lines[1:])
    assert any(line.startswith("spec: 1.") for line in lines[1:])


def test_unknown_command_fails(runtime: Runtime) -> None:
    assert runtime("no-such-command", check=False).returncode != 0


# ---- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["state"],
        ["start"],
        ["kill"],
        ["delete"],
        ["pause"],
        ["resume"],
        ["ps"],
        ["exec"],
        ["events", "--stats"],
    ],
)
def test_unknown_id_does_not_exist(runtime: Runtime, command: list[str]) -> None:
    cid = new_id()
    args = [*command, cid]
    if command == ["exec"]:
        args.append("/bin/true")
    result = runtime(*args, check=False)
    # runc's exec reports its own failures with 255 (exit statuses belong to the process).
    assert result.returncode in ((1, 255) if command == ["exec"] else (1,))
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("bad_id", ["a/b", "..", "../escape", "x/../y", "/abs"])
def test_invalid_ids_rejected(runtime: Runtime, containers: Containers, bad_id: str) -> None:
    bundle = containers.bundle("/bin/true")
    root_before = sorted(p.name for p in runtime.root.iterdir()) if runtime.root else []
    result = runtime(
        "create", "--bundle", str(bundle.path), bad_id, output=bundle.path / "o", check=False
    )
    assert result.returncode != 0
    if runtime.root:
        assert sorted(p.name for p in runtime.root.iterdir()) == root_before
        assert not (runtime.root.parent / "escape").exists()


def test_bad_config_json(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    (bundle.path / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    result = runtime.create(bundle, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() != ""
    assert runtime("state", bundle.id, check=False).returncode == 1


def test_missing_config(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    (bundle.path / "config.json").unlink()
    result = runtime.create(bundle, check=False)
    assert result.returncode == 1
    assert "config.json" in result.stderr
    assert runtime("state", bundle.id, check=False).returncode == 1


def test_log_json_on_error(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    cid = new_id()
    result = runtime("--log", str(log), "--log-format", "json", "state", cid, check=False)
    assert result.returncode == 1
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [e for e in entries if e["level"] == "error"]
    assert errors, entries
    assert "does not exist" in errors[-1]["msg"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", errors[-1]["time"])
    # ... and plain text on stderr too, for callers that only read stderr.
    assert "does not exist" in result.stderr


def test_log_flag_equals_form(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    result = runtime(f"--log={log}", "--log-format=json", "state", new_id(), check=False)
    assert result.returncode == 1
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"


def test_stdout_is_silent_on_successful_create(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    containers.create(bundle)
    assert (bundle.path / "create.out").read_text() == ""
