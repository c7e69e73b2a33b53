"""Field numbers and names that containerd relies on (protocols.md sections 1.2, 2.5, 2.7, 2.8),
checked against the generated modules independently of the .proto files."""

from __future__ import annotations

import pytest

from kettle.proto import (
    _wire,
    envelope_pb,
    events_pb,
    events_service_pb,
    mount_pb,
    rpc_status_pb,
    runc_options_pb,
    runtimeoptions_pb,
    task_pb,
    task_types_pb,
    ttrpc_pb,
)

CONTRACT: dict[type[_wire.Message], str] = {
    ttrpc_pb.Request: "service 1, method 2, payload 3, timeout_nano 4, metadata 5",
    ttrpc_pb.KeyValue: "key 1, value 2",
    ttrpc_pb.Response: "status 1, payload 2",
    rpc_status_pb.Status: "code 1, message 2, details 3",
    mount_pb.Mount: "type 1, source 2, target 3, options 4",
    task_types_pb.ProcessInfo: "pid 1, info 2",
    task_pb.StateRequest: "id 1, exec_id 2",
    task_pb.StateResponse: "id 1, bundle 2, pid 3, status 4, stdin 5, stdout 6, stderr 7, "
    "terminal 8, exit_status 9, exited_at 10, exec_id 11",
    task_pb.CreateTaskRequest: "id 1, bundle 2, rootfs 3, terminal 4, stdin 5, stdout 6, "
    "stderr 7, checkpoint 8, parent_checkpoint 9, options 10, oom_path 11",
    task_pb.CreateTaskResponse: "pid 1",
    task_pb.StartRequest: "id 1, exec_id 2",
    task_pb.StartResponse: "pid 1",
    task_pb.DeleteRequest: "id 1, exec_id 2",
    task_pb.DeleteResponse: "pid 1, exit_status 2, exited_at 3",
    task_pb.PidsRequest: "id 1",
    task_pb.PidsResponse: "processes 1",
    task_pb.PauseRequest: "id 1",
    task_pb.ResumeRequest: "id 1",
    task_pb.CheckpointTaskRequest: "id 1, path 2, options 3",
    task_pb.KillRequest: "id 1, exec_id 2, signal 3, all 4",
    task_pb.ExecProcessRequest: "id 1, exec_id 2, terminal 3, stdin 4, stdout 5, stderr 6, spec 7",
    task_pb.ResizePtyRequest: "id 1, exec_id 2, width 3, height 4",
    task_pb.CloseIORequest: "id 1, exec_id 2, stdin 3",
    task_pb.UpdateTaskRequest: "id 1, resources 2, annotations 3",
    task_pb.WaitRequest: "id 1, exec_id 2",
    task_pb.WaitResponse: "exit_status 1, exited_at 2",
    task_pb.StatsRequest: "id 1",
    task_pb.StatsResponse: "stats 1",
    task_pb.ConnectRequest: "id 1",
    task_pb.ConnectResponse: "shim_pid 1, task_pid 2, version 3",
    task_pb.ShutdownRequest: "id 1, now 2",
    events_pb.TaskCreate: "container_id 1, bundle 2, rootfs 3, io 4, checkpoint 5, pid 6",
    events_pb.TaskIO: "stdin 1, stdout 2, stderr 3, terminal 4",
    events_pb.TaskStart: "container_id 1, pid 2",
    events_pb.TaskExit: "container_id 1, id 2, pid 3, exit_status 4, exited_at 5, exit_reason 6",
    events_pb.TaskDelete: "container_id 1, pid 2, exit_status 3, exited_at 4, id 5",
    events_pb.TaskExecAdded: "container_id 1, exec_id 2",
    events_pb.TaskExecStarted: "container_id 1, exec_id 2, pid 3",
    events_pb.TaskOOM: "container_id 1",
    events_pb.TaskPaused: "container_id 1",
    events_pb.TaskResumed: "container_id 1",
    events_pb.TaskCheckpointed: "container_id 1, checkpoint 2",
    envelope_pb.Envelope: "timestamp 1, namespace 2, topic 3, event 4",
    events_service_pb.ForwardRequest: "envelope 1",
    runc_options_pb.Options: "no_pivot_root 1, no_new_keyring 2, shim_cgroup 3, io_uid 4, "
    "io_gid 5, binary_name 6, root 7, criu_path 8, systemd_cgroup 9, criu_image_path 10, "
    "criu_work_path 11, task_api_address 12, task_api_version 13",
    runc_options_pb.ProcessDetails: "exec_id 1",
    runtimeoptions_pb.Options: "type_url 1, config_path 2",
}


@pytest.mark.parametrize("cls", list(CONTRACT), ids=lambda c: c.FULL_NAME)
def test_field_numbers(cls: type[_wire.Message]) -> None:
    expected = {}
    for item in CONTRACT[cls].split(", "):
        name, number = item.split()
        expected[name] = int(number)
    assert {f.name: f.number for f in cls.FIELDS} == expected


def test_full_names_are_containerds() -> None:
    assert task_pb.CreateTaskRequest.FULL_NAME == "containerd.task.v2.CreateTaskRequest"
    assert events_pb.TaskExit.FULL_NAME == "containerd.events.TaskExit"
    assert envelope_pb.Envelope.FULL_NAME == "containerd.types.Envelope"
    assert runc_options_pb.Options.FULL_NAME == "containerd.runc.v1.Options"
    assert runtimeoptions_pb.Options.FULL_NAME == "runtimeoptions.v1.Options"


def test_status_enum() -> None:
    assert [(s.name, s.value) for s in task_types_pb.Status] == [
        ("UNKNOWN", 0),
        ("CREATED", 1),
        ("RUNNING", 2),
        ("STOPPED", 3),
        ("PAUSED", 4),
        ("PAUSING", 5),
    ]


def test_task_service_has_the_17_methods() -> None:
    svc = task_pb.TASK_SERVICE
    assert svc.name == "containerd.task.v2.Task"
    methods = "State Create Start Delete Pids Pause Resume Checkpoint Kill Exec ResizePty CloseIO"
    methods += " Update Wait Stats Connect Shutdown"
    assert sorted(svc.methods) == sorted(methods.split(" "))
    assert svc.methods["Wait"] == (task_pb.WaitRequest, task_pb.WaitResponse)
    assert svc.methods["Kill"][1].FULL_NAME == "google.protobuf.Empty"


def test_events_service() -> None:
    svc = events_service_pb.EVENTS_SERVICE
    assert svc.name == "containerd.services.events.ttrpc.v1.Events"
    assert svc.methods["Forward"][0] is events_service_pb.ForwardRequest
