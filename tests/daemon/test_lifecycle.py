"""kctl's lifecycle verbs beyond the first slice: pause/unpause, restart, rename, ps filters and
templates, info, completion, replica groups, and 50 containers surviving kill -9 of kettled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.daemon.conftest import BIN, Image, Kettled, wait_for

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="session")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", "-q", image.ref)
    return image.ref


def _name() -> str:
    return f"l-{uuid.uuid4().hex[:10]}"


def _inspect(k: Kettled, name: str) -> dict[str, object]:
    (item,) = json.loads(k.ok("inspect", name))
    assert isinstance(item, dict)
    return item


def _proc_state(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return "?"


def test_pause_and_unpause_freeze_the_processes(kettled: Kettled, ref: str) -> None:
    name = _name()
    loop = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"
    kettled.ok("run", "-d", "--name", name, ref, "sh", "-c", loop)
    try:
        wait_for(lambda: len(kettled.ok("logs", name).split()) >= 2, "output")
        kettled.ok("pause", name)
        assert _inspect(kettled, name)["status"] == "paused"
        assert "(Paused)" in kettled.ok("ps", "--filter", f"name={name}")
        frozen = len(kettled.ok("logs", name).split())
        # While frozen nothing runs: a second look after the copier had time finds no more.
        wait_for(lambda: len(kettled.ok("logs", name).split()) == frozen, "the copier to settle")
        pid = _inspect(kettled, name)["pid"]
        assert isinstance(pid, int)
        res = kettled.kctl("pause", name)
        assert res.returncode != 0 and "already paused" in res.stderr
        kettled.ok("unpause", name)
        assert _inspect(kettled, name)["status"] == "running"
        wait_for(lambda: len(kettled.ok("logs", name).split()) > frozen + 2, "output again")
        res = kettled.kctl("unpause", name)
        assert res.returncode != 0 and "not paused" in res.stderr
        # stop of a paused container works (it is thawed first).
        kettled.ok("pause", name)
        kettled.ok("stop", "-t", "1", name)
        assert _inspect(kettled, name)["status"] == "exited"
    finally:
        kettled.kctl("rm", "-f", name)


def test_restart_runs_the_container_again(kettled: Kettled, ref: str) -> None:
    name = _name()
    kettled.ok("run", "-d", "--name", name, ref, "sh", "-c", "echo started; exec sleep 1000")
    try:
        first = _inspect(kettled, name)["pid"]
        kettled.ok("restart", "-t", "1", name)
        info = _inspect(kettled, name)
        assert info["status"] == "running" and info["pid"] != first
        wait_for(lambda: kettled.ok("logs", name) == "started\nstarted\n", "two runs' output")
        # A restart by the user is not a policy restart, and leaves the container running.
        assert info["restart_count"] == 0 and not info["stopped_by_user"]
    finally:
        kettled.kctl("rm", "-f", name)


def test_rename(kettled: Kettled, ref: str) -> None:
    a, b, c = _name(), _name(), _name()
    kettled.ok("create", "--name", a, ref, "true")
    kettled.ok("create", "--name", c, ref, "true")
    try:
        kettled.ok("rename", a, b)
        assert _inspect(kettled, b)["name"] == b
        assert kettled.kctl("inspect", a).returncode != 0
        res = kettled.kctl("rename", b, c)
        assert res.returncode != 0 and "already in use" in res.stderr
        res = kettled.kctl("rename", b, "bad/name")
        assert res.returncode != 0 and "container name" in res.stderr
    finally:
        kettled.kctl("rm", "-f", b, c)


def test_ps_filters_and_templates(kettled: Kettled, ref: str) -> None:
    tag = uuid.uuid4().hex[:8]
    up, down = _name(), _name()
    kettled.ok("run", "-d", "--name", up, "-l", f"suite={tag}", "-l", "role=web", ref,
               "sleep", "1000")  # fmt: skip
    kettled.ok("run", "-d", "--name", down, "-l", f"suite={tag}", ref, "sh", "-c", "exit 3")
    try:
        wait_for(lambda: _inspect(kettled, down)["status"] == "exited", "the exit")
        names = kettled.ok("ps", "-a", "-f", f"label=suite={tag}", "--format", "{{.Names}}")
        assert sorted(names.split()) == sorted([up, down])
        running = kettled.ok("ps", "-f", f"label=suite={tag}", "--format", "{{.Names}}")
        assert running.split() == [up]
        exited = kettled.ok("ps", "-a", "-f", "exited=3", "-f", f"label=suite={tag}", "-q")
        assert exited.split() == [_inspect(kettled, down)["id"][:12]]  # type: ignore[index]
        both = kettled.ok("ps", "-a", "-f", f"name={up}", "-f", f"name={down}", "-q")
        assert len(both.split()) == 2
        table = kettled.ok("ps", "-a", "-f", f"label=suite={tag}",
                           "--format", "table {{.Names}}\t{{.State}}")  # fmt: skip
        lines = table.splitlines()
        assert lines[0].split() == ["NAMES", "STATE"] and len(lines) == 3
        assert f"{up}" in table and "running" in table and "exited" in table
        js = kettled.ok("ps", "-f", f"name={up}", "--format", "{{json .Labels}}")
        assert json.loads(js) == f"role=web,suite={tag}"
        for bad in (["-f", "colour=red"], ["--format", "{{.Nope}}"]):
            res = kettled.kctl("ps", *bad)
            assert res.returncode != 0 and res.stderr.count("\n") == 1, res.stderr
    finally:
        kettled.kctl("rm", "-f", up, down)


def test_info_and_completion(kettled: Kettled) -> None:
    info = json.loads(kettled.ok("info", "--format", "json"))
    assert info["root"] == str(kettled.root)
    assert info["cgroup_version"] in ("v1", "hybrid", "v2")
    assert info["kernel"] == os.uname().release
    script = kettled.ok("completion", "bash")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert " ps)" in script and "--filter" in script
    # completion needs no daemon
    res = subprocess.run([str(BIN / "kctl"), "--address", "/nonexistent.sock", "completion",
                          "fish"], capture_output=True, text=True, check=False)  # fmt: skip
    assert res.returncode == 0 and "complete -c kctl" in res.stdout


def test_fifty_containers_survive_kill9_and_restart(kettled: Kettled, ref: str) -> None:
    """The issue's proof: kill -9 of kettled with 50 running containers, then a restart: all
    50 still running and listed, no exit status and no log line lost."""
    tag = uuid.uuid4().hex[:8]
    names = [f"f{tag}-{i}" for i in range(50)]
    loop = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done"
    try:
        for n in names:
            kettled.ok("run", "-d", "--name", n, "-l", f"fifty={tag}", ref, "sh", "-c", loop)
        listed = kettled.ok("ps", "-f", f"label=fifty={tag}", "--format", "{{.Names}}").split()
        assert sorted(listed) == sorted(names)
        pids = {n: _inspect(kettled, n)["pid"] for n in names}
        victims = names[:5]
        kettled.kill9()
        try:
            for n in victims:  # these die while kettled is away: their status must not be lost
                pid = pids[n]
                assert isinstance(pid, int)
                os.kill(pid, signal.SIGKILL)
        finally:
            kettled.start()
        running = kettled.ok("ps", "-f", f"label=fifty={tag}", "--format", "{{.Names}}").split()
        assert sorted(running) == sorted(names[5:])
        for n in names[5:]:
            info = _inspect(kettled, n)
            assert info["status"] == "running" and info["pid"] == pids[n]
        for n in victims:
            wait_for(lambda n=n: _inspect(kettled, n)["status"] == "exited", f"{n}'s exit")
            assert _inspect(kettled, n)["exit_code"] == 137
        probe = names[10]
        before = len(kettled.ok("logs", probe).split())
        wait_for(lambda: len(kettled.ok("logs", probe).split()) > before + 3, "new output")
        kettled.ok("stop", "-t", "1", *names[5:])
        for n in names:
            numbers = [int(x) for x in kettled.ok("logs", n).split()]
            assert numbers == list(range(len(numbers))), f"{n}: a log line lost or repeated"
    finally:
        for n in names:
            kettled.kctl("rm", "-f", n)


def test_groups_scale_through_the_api(kettled: Kettled, ref: str) -> None:
    code = f"""
import sys
from kettle.api import kettle_pb as pb
from kettle.cli.client import Client
c = Client({kettled.address!r})
t = pb.CreateContainerRequest(image={ref!r}, args=["sleep", "1000"])
g = c.call("ScaleGroup", pb.ScaleRequest(name=sys.argv[1], replicas=3, template=t, start=True),
           pb.Group)
print(" ".join(g.members))
"""
    group = _name()
    try:
        out = subprocess.run([sys.executable, "-c", code, group], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        assert out.split() == [f"{group}-{i}" for i in (1, 2, 3)]
        names = kettled.ok("ps", "-f", f"group={group}", "--format", "{{.Names}}").split()
        assert sorted(names) == [f"{group}-{i}" for i in (1, 2, 3)]
        kettled.ok("scale", f"{group}=1")
        names = kettled.ok("ps", "-a", "-f", f"group={group}", "--format", "{{.Names}}").split()
        assert names == [f"{group}-1"]
        kettled.ok("scale", f"{group}=2")
        names = kettled.ok("ps", "-f", f"group={group}", "--format", "{{.Names}}").split()
        assert sorted(names) == [f"{group}-1", f"{group}-2"]
        res = kettled.kctl("scale", "nosuchgroup=2")
        assert res.returncode != 0 and "no such group" in res.stderr
        kettled.ok("rm", group)
        assert kettled.ok("ps", "-a", "-f", f"group={group}", "-q") == ""
    finally:
        kettled.kctl("rm", "-f", group)


def test_unary_verbs_skip_grpc_and_fall_back_to_it(kettled: Kettled, ref: str) -> None:
    """kctl's unary calls go over kettled's ttrpc socket (no grpcio import); without that
    socket (an older kettled) they go over gRPC."""
    code = (
        "import sys, kettle.cli.main as m; code = m.main(sys.argv[1:]); "
        "print('grpc' in sys.modules, code, file=sys.stderr)"
    )
    argv = [sys.executable, "-c", code, "--address", kettled.address, "ps", "-a", "-q"]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert res.stderr.split() == ["False", "0"], res.stderr
    fast = kettled.address + ".ttrpc"
    os.rename(fast, fast + ".away")
    try:
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert res.stderr.split() == ["True", "0"], res.stderr
    finally:
        os.rename(fast + ".away", fast)


def test_the_known_shim_takes_the_next_container_and_a_gone_one_is_replaced(
    image: Image, tmp_path: Path
) -> None:
    # A kettled of its own: this test stops a shim, which must serve nobody else's containers.
    k = Kettled(tmp_path / "kettled", image.registry)
    try:
        k.start()
        k.ok("pull", image.ref)
        first = k.ok("run", "-d", image.ref, "sleep", "1000").strip()
        shims = k.shims()
        assert len(shims) == 1
        # Admitted straight into the shim kettled knows: still one shim, both running.
        second = k.ok("run", "-d", image.ref, "sleep", "1000").strip()
        assert k.shims() == shims
        assert set(k.ok("ps", "-q", "--no-trunc").split()) == {first, second}
        k.ok("rm", "-f", first, second)
        # The idle shim goes (as when its linger ends): the next start finds its socket gone
        # and has `shim start` make a new one.
        os.kill(shims[0], signal.SIGTERM)
        wait_for(lambda: not k.shims(), "the idle shim to exit")
        third = k.ok("run", "-d", image.ref, "sleep", "1000").strip()
        replaced = k.shims()
        assert len(replaced) == 1 and replaced != shims
        assert k.ok("ps", "-q", "--no-trunc").split() == [third]
        k.ok("rm", "-f", third)
    finally:
        leaks = k.cleanup()
        assert leaks == [], f"left behind: {leaks}"
