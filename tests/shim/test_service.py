"""The task service against a scripted backend: states, events and the error codes containerd
branches on.  No root needed; exits are delivered by hand through a fake reaper."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kettle import errors
from kettle.proto import any_pb, cgroups_v1_pb, cgroups_v2_pb, runc_options_pb, task_pb, wkt
from kettle.shim.service import PROCESS_TYPE, RESOURCES_TYPE, TaskService
from kettle.ttrpc import Client, Context, Server
from tests.shim.fakes import (
    FakeBackend,
    FakeIO,
    FakeLoop,
    FakePublisher,
    FakeReaper,
    backend_factory,
    make_bundle,
)

CREATED, RUNNING, STOPPED, PAUSED = 1, 2, 3, 4


class Env:
    def __init__(self, tmp: Path, cgroup_v2: bool = False) -> None:
        self.tmp = tmp
        self.reaper = FakeReaper()
        self.backend = FakeBackend(self.reaper)
        self.publisher = FakePublisher()
        self.ios: list[FakeIO] = []
        self.idle: list[bool] = []
        self.loop = FakeLoop()

        def new_io(**kwargs: Any) -> FakeIO:
            io = FakeIO(**kwargs)
            self.ios.append(io)
            return io

        self.svc = TaskService(
            namespace="ns",
            publisher=self.publisher,  # type: ignore[arg-type]
            reaper=self.reaper,  # type: ignore[arg-type]
            loop=self.loop,  # type: ignore[arg-type]
            oom=None,
            cgroup_v2=cgroup_v2,
            new_backend=backend_factory(self.backend),  # type: ignore[arg-type]
            new_io=new_io,  # type: ignore[arg-type]
            on_idle=self.idle.append,
        )
        self.ctx = Context("containerd.task.v2.Task", "X", {}, None, None, threading.Event())

    def create(self, cid: str = "c1", pidns: bool = True, **kw: Any) -> int:
        bundle = make_bundle(self.tmp, cid, pidns=pidns)
        req = task_pb.CreateTaskRequest(id=cid, bundle=bundle, stdout="/fifo/out", **kw)
        return self.svc.create(req, self.ctx).pid

    def start(self, cid: str = "c1", exec_id: str = "") -> int:
        return self.svc.start(task_pb.StartRequest(id=cid, exec_id=exec_id), self.ctx).pid

    def state(self, cid: str = "c1", exec_id: str = "") -> task_pb.StateResponse:
        return self.svc.state(task_pb.StateRequest(id=cid, exec_id=exec_id), self.ctx)

    def kill(self, cid: str = "c1", exec_id: str = "", sig: int = 9, all: bool = False) -> None:
        self.svc.kill(task_pb.KillRequest(id=cid, exec_id=exec_id, signal=sig, all=all), self.ctx)

    def delete(self, cid: str = "c1", exec_id: str = "") -> task_pb.DeleteResponse:
        return self.svc.delete(task_pb.DeleteRequest(id=cid, exec_id=exec_id), self.ctx)

    def exec(self, exec_id: str, cid: str = "c1", args: list[str] | None = None, **kw: Any) -> None:
        spec = any_pb.Any(
            type_url=PROCESS_TYPE, value=json.dumps({"args": args or ["true"], "cwd": "/"}).encode()
        )
        self.svc.exec(
            task_pb.ExecProcessRequest(id=cid, exec_id=exec_id, spec=spec, **kw), self.ctx
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield Env(tmp_path)


def test_create_start_exit_delete(env: Env) -> None:
    pid = env.create(terminal=False)
    assert env.state().status == CREATED
    assert env.state().pid == pid
    assert env.start() == pid
    assert env.state().status == RUNNING
    env.reaper.exit(pid, 137)
    st = env.state()
    assert (st.status, st.exit_status) == (STOPPED, 137)
    assert st.exited_at is not None and st.exited_at.seconds > 0
    resp = env.delete()
    assert (resp.pid, resp.exit_status) == (pid, 137)
    assert env.publisher.names() == ["TaskCreate", "TaskStart", "TaskExit", "TaskDelete"]
    create, _, exit_, delete = env.publisher.events
    assert (create.container_id, create.pid, create.bundle) == ("c1", pid, str(env.tmp / "c1"))
    assert (exit_.container_id, exit_.id, exit_.exit_status) == ("c1", "c1", 137)
    assert (delete.container_id, delete.exit_status) == ("c1", 137)
    assert ("delete", "c1", False) in env.backend.calls
    assert env.ios[0].closed
    with pytest.raises(errors.NotFound):
        env.state()


def test_exit_during_start_is_published_after_task_start(env: Env) -> None:
    env.create()
    env.backend.on_start = lambda pid: env.reaper.exit(pid, 0)
    env.start()
    assert env.publisher.names() == ["TaskCreate", "TaskStart", "TaskExit"]


def test_duplicate_container_is_already_exists(env: Env) -> None:
    env.create()
    with pytest.raises(errors.AlreadyExists):
        env.create()


def test_unknown_ids_are_not_found(env: Env) -> None:
    for call in (env.state, env.kill, env.delete, env.start):
        with pytest.raises(errors.NotFound):
            call("nope")  # type: ignore[operator]
    env.create()
    with pytest.raises(errors.NotFound):
        env.state("c1", "no-exec")


def test_kill_after_exit_is_not_found(env: Env) -> None:
    """CRI's kill-on-delete (all=true) needs NOT_FOUND for a stopped task."""
    pid = env.create()
    env.start()
    env.kill(sig=15)
    assert ("kill", "c1", 15, False) in env.backend.calls
    env.reaper.exit(pid, 143)
    with pytest.raises(errors.NotFound, match="already finished"):
        env.kill(all=True)


def test_delete_running_is_refused_and_created_is_killed(env: Env) -> None:
    pid = env.create()
    env.start()
    with pytest.raises(errors.FailedPrecondition, match="running"):
        env.delete()
    env.create("c2")
    pid2 = env.svc.containers["c2"].init.pid  # type: ignore[union-attr]
    # A never-started task may be deleted: the runtime kills it, the reaper brings its exit.
    timer = threading.Timer(0.1, lambda: env.reaper.exit(pid2, 137))
    timer.start()
    resp = env.delete("c2")
    timer.join()
    assert resp.exit_status == 137
    assert ("delete", "c2", True) in env.backend.calls
    env.reaper.exit(pid, 0)


def test_exec_lifecycle_and_codes(env: Env) -> None:
    pid = env.create()
    env.start()
    env.exec("e1", args=["echo", "x"], stdout="/fifo/e1-out")
    with pytest.raises(errors.AlreadyExists, match="e1"):
        env.exec("e1")
    assert env.state(exec_id="e1").status == CREATED
    with pytest.raises(errors.FailedPrecondition, match="not started"):
        env.kill(exec_id="e1")
    epid = env.start(exec_id="e1")
    assert ("exec", "c1", "e1", ["echo", "x"]) in env.backend.calls
    st = env.state(exec_id="e1")
    assert (st.status, st.pid, st.exec_id, st.stdout) == (RUNNING, epid, "e1", "/fifo/e1-out")
    with pytest.raises(errors.FailedPrecondition):
        env.delete(exec_id="e1")
    env.reaper.exit(epid, 4)
    with pytest.raises(errors.NotFound):
        env.kill(exec_id="e1")
    waited = env.svc.wait(task_pb.WaitRequest(id="c1", exec_id="e1"), env.ctx)
    assert waited.exit_status == 4
    assert env.delete(exec_id="e1").exit_status == 4
    with pytest.raises(errors.NotFound):
        env.state(exec_id="e1")
    names = env.publisher.names()
    assert names[2:] == ["TaskExecAdded", "TaskExecStarted", "TaskExit"], names
    exit_ = env.publisher.events[-1]
    assert (exit_.container_id, exit_.id, exit_.exit_status) == ("c1", "e1", 4)
    env.reaper.exit(pid, 0)


def test_exec_requires_a_process_spec_and_a_live_container(env: Env) -> None:
    pid = env.create()
    env.start()
    bad = any_pb.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
    with pytest.raises(errors.InvalidArgument, match="runtime-spec/1/Process"):
        env.svc.exec(task_pb.ExecProcessRequest(id="c1", exec_id="x", spec=bad), env.ctx)
    env.reaper.exit(pid, 0)
    with pytest.raises(errors.FailedPrecondition, match="stopped"):
        env.exec("late")


def test_failed_exec_start_releases_waiters(env: Env) -> None:
    pid = env.create()
    env.start()
    env.exec("e1")
    env.backend.fail["exec"] = errors.FailedPrecondition('exec: "nope": no such file')
    with pytest.raises(errors.FailedPrecondition, match="nope"):
        env.start(exec_id="e1")
    assert env.svc.wait(task_pb.WaitRequest(id="c1", exec_id="e1"), env.ctx).exit_status == 255
    env.reaper.exit(pid, 0)


def test_wait_blocks_until_exit(env: Env) -> None:
    pid = env.create()
    env.start()
    got: list[int] = []

    def waiter() -> None:
        got.append(env.svc.wait(task_pb.WaitRequest(id="c1"), env.ctx).exit_status)

    t = threading.Thread(target=waiter)
    t.start()
    t.join(0.2)
    assert t.is_alive() and got == []
    env.reaper.exit(pid, 7)
    t.join(5)
    assert got == [7]


def test_pause_resume_state_and_events(env: Env) -> None:
    pid = env.create()
    with pytest.raises(errors.FailedPrecondition):
        env.svc.pause(task_pb.PauseRequest(id="c1"), env.ctx)
    env.start()
    env.svc.pause(task_pb.PauseRequest(id="c1"), env.ctx)
    assert env.state().status == PAUSED
    env.svc.resume(task_pb.ResumeRequest(id="c1"), env.ctx)
    assert env.state().status == RUNNING
    assert env.publisher.names()[-2:] == ["TaskPaused", "TaskResumed"]
    env.reaper.exit(pid, 0)


def test_pids_name_exec_processes(env: Env) -> None:
    pid = env.create()
    env.start()
    env.exec("e1")
    epid = env.start(exec_id="e1")
    resp = env.svc.pids(task_pb.PidsRequest(id="c1"), env.ctx)
    by_pid = {p.pid: p.info for p in resp.processes}
    assert by_pid[pid] is None
    info = by_pid[epid]
    assert info is not None
    assert wkt.unpack_any(info, runc_options_pb.ProcessDetails).exec_id == "e1"
    env.reaper.exit(epid, 0)
    env.reaper.exit(pid, 0)


@pytest.mark.parametrize("v2", [False, True])
def test_stats_type_follows_the_cgroup_version(tmp_path: Path, v2: bool) -> None:
    env = Env(tmp_path, cgroup_v2=v2)
    pid = env.create()
    env.start()
    stats = env.svc.stats(task_pb.StatsRequest(id="c1"), env.ctx).stats
    assert stats is not None
    if v2:
        m2 = wkt.unpack_any(stats, cgroups_v2_pb.Metrics)
        assert m2.pids is not None and m2.pids.current == 1
    else:
        m1 = wkt.unpack_any(stats, cgroups_v1_pb.Metrics)
        assert m1.memory is not None and m1.memory.usage is not None
        assert m1.memory.usage.usage == 5
    env.reaper.exit(pid, 0)
    with pytest.raises(errors.NotFound):
        env.svc.stats(task_pb.StatsRequest(id="c1"), env.ctx)


def test_update_checks_its_payload(env: Env) -> None:
    pid = env.create()
    env.start()
    res = any_pb.Any(type_url=RESOURCES_TYPE, value=b'{"pids": {"limit": 10}}')
    env.svc.update(task_pb.UpdateTaskRequest(id="c1", resources=res), env.ctx)
    assert ("update", "c1", {"pids": {"limit": 10}}) in env.backend.calls
    with pytest.raises(errors.InvalidArgument):
        env.svc.update(task_pb.UpdateTaskRequest(id="c1"), env.ctx)
    env.reaper.exit(pid, 0)


def test_checkpoint_is_unimplemented(env: Env) -> None:
    env.create()
    with pytest.raises(errors.Unimplemented):
        env.svc.checkpoint(task_pb.CheckpointTaskRequest(id="c1"), env.ctx)
    with pytest.raises(errors.Unimplemented):
        env.create("c2", checkpoint="/some/image")


def test_stdio_calls_reach_the_process_io(env: Env) -> None:
    env.create(terminal=True, stdin="/fifo/in")
    io = env.ios[0]
    assert io.kwargs["terminal"] and io.opened and io.started_
    env.svc.resize_pty(task_pb.ResizePtyRequest(id="c1", width=80, height=24), env.ctx)
    env.svc.close_io(task_pb.CloseIORequest(id="c1", stdin=True), env.ctx)
    assert io.resized == (80, 24) and io.stdin_closed


def test_failed_create_leaves_nothing(env: Env) -> None:
    env.backend.fail["create"] = errors.InvalidArgument("process.args: empty")
    with pytest.raises(errors.InvalidArgument):
        env.create()
    assert env.svc.containers == {}
    assert env.ios[0].closed
    env.backend.fail.clear()
    env.create()  # the id is free again


def test_container_without_pid_namespace_loses_its_other_processes(env: Env) -> None:
    pid = env.create(pidns=False)
    env.start()
    env.reaper.exit(pid, 0)
    for _ in range(100):
        if ("kill", "c1", 9, True) in env.backend.calls:
            break
        threading.Event().wait(0.01)
    assert ("kill", "c1", 9, True) in env.backend.calls


def test_connect_shutdown_and_admission(env: Env) -> None:
    import os

    resp = env.svc.connect(task_pb.ConnectRequest(id="c1"), env.ctx)
    assert (resp.shim_pid, resp.task_pid) == (os.getpid(), 0)
    env.svc.admit(b"a\n2", env.ctx)
    env.svc.admit(b"b\n2", env.ctx)
    env.svc.admit(b"b\n2", env.ctx)  # again: still one place
    with pytest.raises(errors.ResourceExhausted):
        env.svc.admit(b"c\n2", env.ctx)
    with pytest.raises(errors.InvalidArgument):
        env.svc.admit(b"c\nlots", env.ctx)
    assert env.svc.busy()
    assert not env.svc.begin_stop()  # reservations keep it alive
    pid = env.create("a")  # consumes the reservation
    assert "a" not in env.svc.reservations
    env.svc.reservations.clear()
    env.svc.shutdown(task_pb.ShutdownRequest(id="a"), env.ctx)
    assert env.idle == [False]
    assert not env.svc.begin_stop()  # a container is still there
    env.start("a")
    env.reaper.exit(pid, 0)
    env.delete("a")
    assert env.svc.begin_stop()
    with pytest.raises(errors.Unavailable):
        env.svc.admit(b"z\n0", env.ctx)
    with pytest.raises(errors.Unavailable):
        env.create("late")


def test_codes_on_the_wire(env: Env) -> None:
    """The same service over real ttrpc: containerd sees the numeric codes it expects."""
    server = Server(log=lambda line: None)
    server.register_service(task_pb.TASK_SERVICE, env.svc)
    address = f"@kettle-shim-test-{id(env)}"
    server.listen(address)
    server.start()
    service = task_pb.TASK_SERVICE.name
    try:
        pid = env.create()
        env.start()
        with Client.connect(address, timeout=5) as client:
            got = client.call(
                service, "State", task_pb.StateRequest(id="c1"), task_pb.StateResponse
            )
            assert got.status == RUNNING
            env.reaper.exit(pid, 0)
            cases = [
                ("Kill", task_pb.KillRequest(id="c1", signal=9, all=True), 5),
                ("State", task_pb.StateRequest(id="zz"), 5),
                ("Checkpoint", task_pb.CheckpointTaskRequest(id="c1"), 12),
                ("Start", task_pb.StartRequest(id="c1"), 9),
            ]
            for method, req, code in cases:
                with pytest.raises(errors.KettleError) as info:
                    client.call_raw(service, method, req, timeout=5)
                assert errors.grpc_code(info.value) == code, (method, info.value)
    finally:
        server.shutdown()
