"""Unit tests of the runtime's pure parts: CLI parsing, state machine, signals, specs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kettle.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kettle.runtime import hooks, namespaces, spec
from kettle.runtime.cli import Flag, _split_globals, parse
from kettle.runtime.cli.events import parse_duration
from kettle.runtime.cli.exec import FLAGS as EXEC_FLAGS
from kettle.runtime.cli.exec import build_process
from kettle.runtime.cli.update import build_resources, parse_bytes
from kettle.runtime.lifecycle import merge_resources, parse_signal
from kettle.runtime.state import (
    ContainerState,
    Status,
    Store,
    check_transition,
    current_status,
    validate_id,
)

FLAGS = (
    Flag(("--bundle", "-b"), "bundle", default="."),
    Flag(("--detach", "-d"), "detach", "bool", False),
    Flag(("--preserve-fds",), "fds", "int", 0),
    Flag(("--env", "-e"), "env", "list"),
)


@pytest.mark.parametrize(
    ("argv", "values", "args"),
    [
        (["--bundle", "/b", "id"], {"bundle": "/b"}, ["id"]),
        (["--bundle=/b", "id"], {"bundle": "/b"}, ["id"]),
        (["-b", "/b", "id"], {"bundle": "/b"}, ["id"]),
        (["-bundle", "/b", "id"], {"bundle": "/b"}, ["id"]),
        (["id", "--detach"], {"detach": True}, ["id"]),
        (["--detach=false", "id"], {"detach": False}, ["id"]),
        (["--preserve-fds", "2", "id"], {"fds": 2}, ["id"]),
        (["-e", "A=1", "--env=B=2", "id"], {"env": ["A=1", "B=2"]}, ["id"]),
        (["--", "-weird-id"], {}, ["-weird-id"]),
    ],
)
def test_parse_flag_forms(argv: list[str], values: dict[str, object], args: list[str]) -> None:
    p = parse(argv, FLAGS)
    for k, v in values.items():
        assert p.values[k] == v
    assert p.args == args


def test_parse_stops_after_positional_for_exec() -> None:
    p = parse(["-d", "ctr", "sh", "-c", "echo --detach"], EXEC_FLAGS, stop_after=1)
    assert p.values["detach"] is True
    assert p.args == ["ctr", "sh", "-c", "echo --detach"]


@pytest.mark.parametrize(
    ("argv", "error"),
    [(["--nope", "id"], "flag provided but not defined"), (["--bundle"], "needs an argument")],
)
def test_parse_errors(argv: list[str], error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        parse(argv, FLAGS)


def test_parse_int_error() -> None:
    with pytest.raises(InvalidArgument, match="invalid value"):
        parse(["--preserve-fds", "x"], FLAGS)


def test_split_globals() -> None:
    glob, cmd, rest = _split_globals(
        ["--root", "/r", "--log=/l", "--debug", "--log-format", "json", "create", "--bundle", "b"]
    )
    assert glob == ["--root", "/r", "--log=/l", "--debug", "--log-format", "json"]
    assert cmd == "create"
    assert rest == ["--bundle", "b"]


@pytest.mark.parametrize(
    ("text", "num"),
    [
        ("9", 9),
        ("KILL", 9),
        ("SIGKILL", 9),
        ("sigterm", 15),
        ("term", 15),
        ("RTMIN+1", int(signal.SIGRTMIN) + 1),
        ("SIGRTMAX-2", int(signal.SIGRTMAX) - 2),
    ],
)
def test_parse_signal(text: str, num: int) -> None:
    assert parse_signal(text) == num


@pytest.mark.parametrize("text", ["SIGNOPE", "0", "99", ""])
def test_parse_signal_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_signal(text)


@pytest.mark.parametrize(
    ("op", "status", "ok", "message"),
    [
        ("start", Status.CREATED, True, ""),
        ("start", Status.RUNNING, False, "cannot start an already running container"),
        ("start", Status.STOPPED, False, "cannot start a container that has stopped"),
        ("kill", Status.STOPPED, False, "container not running"),
        ("kill", Status.PAUSED, True, ""),
        ("delete", Status.RUNNING, False, "cannot delete container c that is not stopped: running"),
        ("delete", Status.STOPPED, True, ""),
        ("pause", Status.PAUSED, False, "container already paused"),
        ("resume", Status.RUNNING, False, "container not paused"),
        ("exec", Status.STOPPED, False, "container not running"),
    ],
)
def test_transitions(op: str, status: Status, ok: bool, message: str) -> None:
    if ok:
        check_transition("c", op, status)
    else:
        with pytest.raises(FailedPrecondition, match=message):
            check_transition("c", op, status)


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", "a b", "x\n"])
def test_validate_id_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_id(bad)


def test_validate_id_accepts_runc_ids() -> None:
    for good in ("abc", "a.b-c_d+e", "0" * 64):
        validate_id(good)


def test_current_status_detects_dead_and_reused_pids() -> None:
    me = os.getpid()
    from kettle.runtime.state import proc_start_time

    start = proc_start_time(me)
    assert start is not None
    st = ContainerState(id="c", bundle="/b", rootfs="/r", pid=me, pid_start=start, status="running")
    assert current_status(st, frozen=False) is Status.RUNNING
    assert current_status(st, frozen=True) is Status.PAUSED
    st.pid_start = start + 1  # same pid, another process: stopped
    assert current_status(st) is Status.STOPPED
    st.pid = 0
    assert current_status(st) is Status.STOPPED


def test_current_status_sees_a_zombie_as_stopped() -> None:
    from kettle.runtime.state import proc_start_time

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        # The child is a zombie until reaped: it must already count as stopped.
        for _ in range(1000):
            if proc_start_time(pid) is None:
                break
            os.sched_yield()
        st = ContainerState(id="c", bundle="/b", rootfs="/r", pid=pid, status="running")
        assert current_status(st) is Status.STOPPED
    finally:
        os.waitpid(pid, 0)


def test_store_roundtrip_and_errors(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    store.create_dir("c1")
    with pytest.raises(AlreadyExists):
        store.create_dir("c1")
    with pytest.raises(NotFound, match="does not exist"):
        store.load("c1")
    st = ContainerState(id="c1", bundle="/b", rootfs="/r", pid=5, annotations={"a": "b"})
    store.save(st)
    assert store.load("c1") == st
    assert store.ids() == ["c1"]
    with store.locked("c1"):
        pass
    store.remove("c1")
    assert store.ids() == []
    with pytest.raises(NotFound):
        store.load("c1")


def test_oci_state_shape() -> None:
    st = ContainerState(id="c", bundle="/b", rootfs="/r", pid=42, config={"ociVersion": "1.0.2"})
    assert st.oci_state(Status.RUNNING) == {
        "ociVersion": "1.0.2",
        "id": "c",
        "status": "running",
        "pid": 42,
        "bundle": "/b",
    }
    assert st.oci_state(Status.STOPPED)["pid"] == 0


def test_namespace_plan() -> None:
    p = namespaces.plan(
        [{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/run/netns/x"}]
    )
    assert p.new == {"pid", "mount"}
    assert p.join == (("network", "/run/netns/x"),)
    from kettle import syscalls as sc

    assert p.unshare_flags == sc.CLONE_NEWPID | sc.CLONE_NEWNS
    assert p.has("network") and not p.has("user")


@pytest.mark.parametrize(
    ("nss", "error"),
    [
        ([{"type": "bogus"}], "unknown namespace"),
        ([{"type": "pid"}, {"type": "pid"}], "duplicate namespace"),
        ([{"type": "net" + "work", "path": "rel/path"}], "must be absolute"),
    ],
)
def test_namespace_plan_rejects(nss: list[dict[str, str]], error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        namespaces.plan(nss)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1024", 1024),
        ("100k", 100 << 10),
        ("64M", 64 << 20),
        ("1g", 1 << 30),
        ("2GiB", 2 << 30),
        ("-1", -1),
    ],
)
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text, "memory") == value


def test_parse_bytes_rejects() -> None:
    with pytest.raises(InvalidArgument, match="--memory"):
        parse_bytes("lots", "memory")


def test_build_resources_from_flags() -> None:
    v: dict[str, object] = {"resources": None, "l3": None, "membw": None}
    v.update({"memory": "64m", "pids-limit": "20", "cpuset-cpus": "0"})
    out = build_resources(v)
    assert out == {"memory": {"limit": 64 << 20}, "pids": {"limit": 20}, "cpu": {"cpus": "0"}}


def test_merge_resources() -> None:
    old = {"memory": {"limit": 1, "reservation": 2}, "pids": {"limit": 3}}
    assert merge_resources(old, {"memory": {"limit": 5}}) == {
        "memory": {"limit": 5, "reservation": 2},
        "pids": {"limit": 3},
    }
    assert old["memory"]["limit"] == 1  # the stored config is not mutated


@pytest.mark.parametrize(
    ("text", "secs"), [("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0), ("2", 2.0)]
)
def test_parse_duration(text: str, secs: float) -> None:
    assert parse_duration(text) == pytest.approx(secs)


def test_exec_process_from_container_defaults() -> None:
    base = {
        "args": ["sh"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
        "terminal": True,
    }
    v = parse(["-e", "X=1", "--cwd", "/tmp", "-u", "1000:1000", "-t"], EXEC_FLAGS).values
    proc = build_process(base, v, ["ls", "-l"])
    assert proc["args"] == ["ls", "-l"]
    assert proc["env"] == ["PATH=/bin", "X=1"]
    assert proc["cwd"] == "/tmp"
    assert proc["user"] == {"uid": 1000, "gid": 1000}
    assert proc["terminal"] is True
    assert base["env"] == ["PATH=/bin"]


def _bundle(tmp_path: Path, config: dict[str, object]) -> Path:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def _config(**over: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/true"], "cwd": "/"},
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]},
    }
    cfg.update(over)
    return cfg


def test_spec_load_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"config\.json does not exist"):
        spec.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(InvalidArgument, match="malformed config"):
        spec.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": "missing"}}))
    with pytest.raises(NotFound, match="rootfs"):
        spec.load(str(tmp_path))


@pytest.mark.parametrize(
    ("over", "error"),
    [
        ({"solaris": {}}, "solaris: not supported"),
        ({"process": {"args": []}}, "process.args"),
        ({"process": {"args": ["x"], "cwd": "rel"}}, "process.cwd"),
        ({"process": {"args": ["x"], "env": ["NOEQUALS"]}}, r"process.env\[0\]"),
        ({"hostname": "h"}, "hostname: needs a uts namespace"),
        ({"linux": {"namespaces": [{"type": "pid"}]}}, "mount namespace is required"),
        (
            {"linux": {"namespaces": [{"type": "mount"}], "sysctl": {"net.ipv4.ip_forward": "1"}}},
            "needs a new network namespace",
        ),
        (
            {"linux": {"namespaces": [{"type": "mount"}], "sysctl": {"vm.swappiness": "1"}}},
            "not a namespaced sysctl",
        ),
        ({"linux": {"namespaces": [{"type": "mount"}], "intelRdt": {"closID": "x"}}}, "intelRdt"),
        (
            {"linux": {"namespaces": [{"type": "mount"}, {"type": "user"}]}},
            "needs uid and gid mappings",
        ),
        ({"hooks": {"prestart": [{"path": "relative"}]}}, "absolute path"),
        ({"hooks": {"nope": []}}, "unknown hook kind"),
    ],
)
def test_spec_validate_rejects(over: dict[str, object], error: str) -> None:
    with pytest.raises(InvalidArgument, match=error):
        spec.validate(_config(**over))


def test_spec_ignores_properties_the_spec_does_not_define() -> None:
    # The runtime spec: "runtimes MUST NOT generate an error if they encounter an unknown
    # property"; only properties it defines that kettle does not implement are refused.
    spec.validate(_config(**{"org.example.extension": {"x": 1}}))


def test_hooks_run_state_on_stdin_and_failures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok = {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}"]}
    hooks.run({"createRuntime": [ok]}, "createRuntime", {"id": "c", "pid": 1})
    assert json.loads(out.read_text()) == {"id": "c", "pid": 1}
    bad = {"path": "/bin/sh", "args": ["sh", "-c", "echo oops >&2; exit 3"]}
    with pytest.raises(FailedPrecondition, match="exited with status 3: oops"):
        hooks.run({"createRuntime": [bad]}, "createRuntime", {})
    warnings: list[str] = []
    hooks.run({"poststop": [bad, ok]}, "poststop", {"id": "z"}, warnings.append)
    assert len(warnings) == 1 and "status 3" in warnings[0]
    assert json.loads(out.read_text()) == {"id": "z"}  # the next hook still ran


def test_hook_timeout() -> None:
    from kettle.errors import DeadlineExceeded

    slow = {"path": "/bin/sh", "args": ["sh", "-c", "sleep 5"], "timeout": 1}
    with pytest.raises(DeadlineExceeded, match="timed out"):
        hooks.run({"prestart": [slow]}, "prestart", {})


def test_status_members_are_singletons_looked_up_by_value() -> None:
    import pickle

    assert Status("running") is Status.RUNNING
    assert Status.STOPPED.value == "stopped"
    assert pickle.loads(pickle.dumps(Status.PAUSED)) is Status.PAUSED
    assert repr(Status.CREATED) == "Status.CREATED"
    with pytest.raises(ValueError, match="not a valid container status"):
        Status("exploded")


def test_runtime_start_path_imports_stay_lean() -> None:
    # Every kettle-runtime start pays for these; they were ~20 ms before being cut out.
    import subprocess
    import sys

    code = (
        "import sys; from kettle.runtime.cli import main; "
        "import kettle.runtime.create, kettle.runtime.lifecycle, kettle.runtime.state; "
        "heavy = {'json', 're', 'enum', 'typing', 'dataclasses', 'socket', 'subprocess', "
        "'datetime', 'contextlib', 'importlib.util', 'inspect'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-IS", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_force_delete_removes_an_interrupted_create(tmp_path: Path) -> None:
    # A create that died half-way leaves a "creating" record with no pid: --force must clear it.
    from kettle.runtime.context import Context
    from kettle.runtime.lifecycle import delete

    ctx = Context(root=str(tmp_path / "root"))
    ctx.store.create_dir("half")
    ctx.store.save(ContainerState(id="half", bundle="/b", rootfs="/r"))
    with pytest.raises(FailedPrecondition, match="not stopped: creating"):
        delete(ctx, "half")
    delete(ctx, "half", force=True)
    assert ctx.store.ids() == []
