"""kctl against a real kettled, shims and registry: the first slice of the engine."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from tests.daemon.conftest import Image, Kettled, wait_for
from tests.image.oci_fixture import free_port

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="session")
def ref(kettled: Kettled, image: Image) -> str:
    out = kettled.ok("pull", image.ref)
    assert out.split()[0] == image.ref
    return image.ref


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _inspect(k: Kettled, name: str) -> dict[str, object]:
    found = json.loads(k.ok("inspect", name))
    assert isinstance(found, list) and len(found) == 1
    item = found[0]
    assert isinstance(item, dict)
    return item


def _one_line_error(res: object, *words: str) -> str:
    assert hasattr(res, "returncode") and hasattr(res, "stderr")
    assert res.returncode != 0
    text = str(res.stderr)
    assert text.startswith("kctl: ") and text.count("\n") == 1, text
    for w in words:
        assert w in text, text
    return text


def test_pull_lists_the_image(kettled: Kettled, ref: str) -> None:
    repo, _, tag = ref.rpartition(":")
    assert [repo, tag] in [line.split()[:2] for line in kettled.ok("images").splitlines()]
    images = json.loads(kettled.ok("images", "--format", "json"))
    (found,) = [i for i in images if i["name"] == ref]
    assert found["digest"].startswith("sha256:")
    assert json.loads(kettled.ok("version", "--format", "json"))["api"] == "v1"


def test_run_rm_prints_output_and_leaves_nothing(kettled: Kettled, ref: str) -> None:
    name = _name()
    res = kettled.kctl("run", "--rm", "--name", name, ref, "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), res.stderr
    _one_line_error(kettled.kctl("inspect", name), "no such container", name)


def test_exit_codes_and_streams_propagate(kettled: Kettled, ref: str) -> None:
    res = kettled.kctl("run", "--rm", ref, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")


def test_run_flags_reach_the_process(kettled: Kettled, ref: str) -> None:
    script = 'echo "$FOO $(pwd) $(id -u):$(id -g) $(hostname)"'
    res = kettled.kctl(
        "run", "--rm", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1001", "--hostname", "hh",
        ref, "sh", "-c", script,
    )  # fmt: skip
    assert (res.returncode, res.stdout) == (0, "bar /tmp 1000:1001 hh\n"), res.stderr


@pytest.mark.parametrize(
    ("user", "ids"),
    [
        ("alice", "1500 1600 1600 50"),
        ("alice:wheel", "1500 10 10 50"),
        ("1500", "1500 1600 1600 50"),
        ("2000:3000", "2000 3000 3000"),
        ("", "0 0 0"),
    ],
)
def test_user_names_resolve_through_the_image(
    kettled: Kettled, ref: str, user: str, ids: str
) -> None:
    res = kettled.kctl(
        "run", "--rm", "-u", user, ref, "sh", "-c", "echo $(id -u) $(id -g) $(id -G)"
    )
    assert (res.returncode, res.stdout) == (0, ids + "\n"), res.stderr


def test_detached_lifecycle(kettled: Kettled, ref: str) -> None:
    name = _name()
    script = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    cid = kettled.ok("run", "-d", "--name", name, ref, "sh", "-c", script).strip()
    assert len(cid) == 64
    wait_for(lambda: "ready\n" in kettled.ok("logs", name), "the container's first line")
    assert cid[:12] in kettled.ok("ps", "-q").split()
    table = kettled.ok("ps")
    assert name in table and "Up " in table
    info = _inspect(kettled, name)
    assert info["status"] == "running"
    pid = info["pid"]
    assert isinstance(pid, int) and pid > 0
    cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    assert f"/{kettled.namespace}/{cid}" in cgroups
    _one_line_error(kettled.kctl("rm", name), "running")

    kettled.ok("stop", "-t", "20", name)
    info = _inspect(kettled, name)
    assert (info["status"], info["exit_code"]) == ("exited", 0)
    assert kettled.ok("logs", name) == "ready\nbye\n"
    assert kettled.ok("logs", "--tail", "1", name) == "bye\n"
    assert cid[:12] not in kettled.ok("ps", "-q").split()
    assert cid[:12] in kettled.ok("ps", "-a", "-q").split()
    assert not os.path.exists(f"/proc/{pid}")

    kettled.ok("rm", name)
    _one_line_error(kettled.kctl("logs", name), "no such container")
    assert not any((d / cid).exists() for d in kettled.cgroup_dirs())
    assert not (kettled.state / kettled.namespace / cid).exists()


def test_stop_escalates_to_sigkill(kettled: Kettled, ref: str) -> None:
    # sh as pid 1 without a trap ignores SIGTERM.
    name = _name()
    kettled.ok("run", "-d", "--name", name, ref, "sleep", "1000")
    kettled.ok("stop", "-t", "1", name)
    assert _inspect(kettled, name)["exit_code"] == 137
    other = _name()
    kettled.ok("create", "--name", other, "--label", "tier=web", ref, "true")
    # inspect -f: one line per container, Docker's spelling of the fields accepted.
    out = kettled.ok("inspect", "-f", "{{.name}} {{.Status}} {{.ExitCode}}", name, other)
    assert out == f"{name} exited 137\n{other} created 0\n"
    assert kettled.ok("inspect", "--format", "{{json .labels}}", other) == '{"tier": "web"}\n'
    _one_line_error(
        kettled.kctl("inspect", "-f", "{{.State.Status}}", name, other), "unknown field .State"
    )
    kettled.ok("rm", name, other)


def test_kill_and_force_remove(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "-d", "--name", name, ref, "sleep", "1000")
    kettled.ok("kill", "-s", "KILL", name)
    assert kettled.ok("wait", name).strip() == "137"
    kettled.ok("start", name)
    assert _inspect(kettled, name)["status"] == "running"
    kettled.ok("rm", "-f", name)
    _one_line_error(kettled.kctl("inspect", name), "no such container")


def test_detached_rm_is_removed_by_kettled(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "-d", "--rm", "--name", name, ref, "true")
    wait_for(lambda: kettled.kctl("inspect", name).returncode != 0, "the removal")
    _one_line_error(kettled.kctl("inspect", name), "no such container")


def test_follow_ends_when_the_container_exits(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "-d", "--name", name, ref, "sh", "-c", "for i in 1 2 3; do echo $i; done")
    assert kettled.ok("logs", "-f", name) == "1\n2\n3\n"
    kettled.ok("rm", name)


def test_containers_survive_kill9_of_kettled(kettled: Kettled, ref: str) -> None:
    counter = _name()
    doomed = _name()
    loop = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"
    kettled.ok("run", "-d", "--name", counter, ref, "sh", "-c", loop)
    kettled.ok("run", "-d", "--name", doomed, ref, "sh", "-c", "echo first; exec sleep 1000")
    pid = _inspect(kettled, counter)["pid"]
    doomed_pid = _inspect(kettled, doomed)["pid"]
    assert isinstance(pid, int) and isinstance(doomed_pid, int)
    wait_for(lambda: len(kettled.ok("logs", counter).split()) >= 3, "some output")
    wait_for(lambda: kettled.ok("logs", doomed) == "first\n", "doomed's first line")

    kettled.kill9()
    try:
        assert os.path.exists(f"/proc/{pid}")
        # doomed writes a line and is killed while kettled is away.
        # (/proc/PID/fd/1 is the host fifo the shim handed it.)
        with open(f"/proc/{doomed_pid}/fd/1", "w") as out:
            out.write("while away\n")
        os.kill(doomed_pid, signal.SIGKILL)
    finally:
        kettled.start()

    assert _inspect(kettled, counter)["status"] == "running"
    assert counter in kettled.ok("ps")
    wait_for(lambda: _inspect(kettled, doomed)["status"] == "exited", "the exit of doomed")
    assert _inspect(kettled, doomed)["exit_code"] == 137
    assert kettled.ok("logs", doomed) == "first\nwhile away\n"
    before = len(kettled.ok("logs", counter).split())
    wait_for(lambda: len(kettled.ok("logs", counter).split()) > before + 5, "new output")
    kettled.ok("stop", "-t", "1", counter)
    numbers = [int(n) for n in kettled.ok("logs", counter).split()]
    assert numbers == list(range(len(numbers))), "a log line was lost or repeated"
    kettled.ok("rm", counter, doomed)


def test_bad_input_is_one_clear_line(kettled: Kettled, ref: str, image: Image) -> None:
    for verb in ("inspect", "logs", "stop", "kill", "rm", "start", "wait"):
        _one_line_error(kettled.kctl(verb, "nosuchcontainer"), "no such container")
    _one_line_error(kettled.kctl("pull", "Bad//Reference"), "reference")
    _one_line_error(kettled.kctl("run", "--rm", "nosuchhost.invalid//x"), "reference")
    missing = f"{image.registry}/kettle-test/missing:latest"
    _one_line_error(kettled.kctl("pull", missing), "missing")
    dead = f"127.0.0.1:{free_port()}/kettle-test/busybox:latest"
    _one_line_error(kettled.kctl("pull", dead), "127.0.0.1")
    _one_line_error(kettled.kctl("rmi", "kettle-test/nothere:latest"), "not found")
    _one_line_error(kettled.kctl("run", "--rm", "-u", "mallory", ref, "true"), "mallory")
    _one_line_error(
        kettled.kctl("run", "--rm", "-u", "alice:nosuchgroup", ref, "true"), "nosuchgroup"
    )
    _one_line_error(kettled.kctl("run", "--rm", "-w", "rel", ref, "true"), "workdir")
    _one_line_error(kettled.kctl("kill", "-s", "NOPE", "x"), "")
    res = kettled.kctl("--address", str(kettled.base / "none.sock"), "ps")
    text = _one_line_error(res, "cannot connect to kettled at", "start it with kettled")
    assert str(kettled.base / "none.sock") in text
    assert kettled.ok("ps", "-a", "-q") == ""


def test_a_second_kettled_is_refused(kettled: Kettled, tmp_path: Path) -> None:
    import subprocess

    from tests.daemon.conftest import BIN

    def second(state: Path) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "kettled"), "--config", str(kettled.config), "--root", str(tmp_path)]
        argv += ["--state", str(state), "--address", kettled.address]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    res = second(kettled.state)
    assert res.returncode == 1 and "another kettled uses state" in res.stderr
    res = second(tmp_path / "state")
    assert res.returncode == 1 and "another kettled is listening there" in res.stderr
    assert kettled.kctl("version").returncode == 0
    assert oct(os.stat(kettled.address).st_mode & 0o777) == "0o660"
