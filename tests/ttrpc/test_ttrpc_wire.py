"""The lean protobuf codec (kettle.proto._wire) against hand-built wire bytes."""

from __future__ import annotations

import pytest

from kettle.errors import InvalidArgument
from kettle.proto import (
    any_pb,
    cgroups_v1_pb,
    events_pb,
    mount_pb,
    rpc_status_pb,
    task_pb,
    task_types_pb,
    timestamp_pb,
    ttrpc_pb,
    wkt,
)
from kettle.proto._wire import DecodeError, Message


def test_proto3_defaults_are_not_written() -> None:
    assert task_pb.StateRequest().encode() == b""
    assert task_pb.KillRequest(id="", signal=0, all=False).encode() == b""


def test_scalars_strings_and_bools() -> None:
    req = task_pb.KillRequest(id="c1", exec_id="e", signal=9, all=True)
    assert req.encode() == b"\x0a\x02c1" + b"\x12\x01e" + b"\x18\x09" + b"\x20\x01"
    assert task_pb.KillRequest.decode(req.encode()) == req


def test_multi_byte_varint() -> None:
    assert task_pb.StartResponse(pid=300).encode() == b"\x08\xac\x02"
    assert task_pb.StartResponse(pid=0xFFFFFFFF).encode() == b"\x08\xff\xff\xff\xff\x0f"


def test_negative_int_is_ten_byte_twos_complement() -> None:
    status = rpc_status_pb.Status(code=-1)
    assert status.encode() == b"\x08" + b"\xff" * 9 + b"\x01"
    assert rpc_status_pb.Status.decode(status.encode()).code == -1
    req = ttrpc_pb.Request(timeout_nano=-5)
    assert ttrpc_pb.Request.decode(req.encode()).timeout_nano == -5


def test_present_empty_submessage_is_written() -> None:
    # Go's ttrpc server always sends Response.status, even for OK: bytes 0a 00.
    assert ttrpc_pb.Response(status=rpc_status_pb.Status()).encode() == b"\x0a\x00"
    assert ttrpc_pb.Response.decode(b"\x0a\x00").status == rpc_status_pb.Status()
    assert ttrpc_pb.Response.decode(b"").status is None


def test_nested_messages_and_timestamps() -> None:
    resp = task_pb.WaitResponse(exit_status=137, exited_at=wkt.timestamp_from_ns(1_500_000_001))
    assert (
        resp.encode() == b"\x08\x89\x01" + b"\x12\x08" + b"\x08\x01" + b"\x10\x81\xca\xb5\xee\x01"
    )
    back = task_pb.WaitResponse.decode(resp.encode())
    assert wkt.timestamp_to_ns(back.exited_at) == 1_500_000_001


def test_repeated_messages_and_strings() -> None:
    req = task_pb.CreateTaskRequest(
        id="c",
        rootfs=[
            task_types_mount("overlay", "overlay", ["lowerdir=/l", "upperdir=/u"]),
            task_types_mount("bind", "/src", ["rbind", "ro"]),
        ],
    )
    back = task_pb.CreateTaskRequest.decode(req.encode())
    assert [m.options for m in back.rootfs] == [["lowerdir=/l", "upperdir=/u"], ["rbind", "ro"]]
    assert back == req


def task_types_mount(kind: str, source: str, options: list[str]) -> mount_pb.Mount:
    return mount_pb.Mount(type=kind, source=source, options=options)


def test_repeated_scalars_are_packed_and_both_forms_decode() -> None:
    usage = cgroups_v1_pb.CPUUsage(per_cpu=[1, 300])
    assert usage.encode() == b"\x22\x03\x01\xac\x02"
    unpacked = b"\x20\x01\x20\xac\x02"
    assert cgroups_v1_pb.CPUUsage.decode(unpacked).per_cpu == [1, 300]


def test_map_is_sorted_entries() -> None:
    req = task_pb.UpdateTaskRequest(annotations={"b": "2", "a": ""})
    assert req.encode() == b"\x1a\x05\x0a\x01a\x12\x00" + b"\x1a\x06\x0a\x01b\x12\x012"
    assert task_pb.UpdateTaskRequest.decode(req.encode()).annotations == {"a": "", "b": "2"}
    # Entries with key or value left out decode to "".
    assert task_pb.UpdateTaskRequest.decode(b"\x1a\x03\x0a\x01k").annotations == {"k": ""}


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    extra = (
        b"\xa0\x06\x96\x01"  # field 100 varint
        b"\xa9\x06"
        + b"\x00" * 8  # field 101 fixed64
        + b"\xb2\x06\x03abc"  # field 102 length-delimited
        + b"\xbd\x06"
        + b"\x00" * 4  # field 103 fixed32
    )
    data = b"\x0a\x02c1" + extra + b"\x12\x02e1"
    assert task_pb.StateRequest.decode(data) == task_pb.StateRequest(id="c1", exec_id="e1")


def test_field_with_unexpected_wire_type_is_skipped() -> None:
    # pid (field 1) sent as a string: treated as an unknown field, like protobuf does.
    assert task_pb.StartResponse.decode(b"\x0a\x01x").pid == 0


def test_last_scalar_wins_and_submessages_merge() -> None:
    assert task_pb.StartResponse.decode(b"\x08\x01\x08\x02").pid == 2
    data = b"\x12\x02\x08\x05" + b"\x12\x02\x10\x07"  # exited_at twice: seconds, then nanos
    ts = task_pb.WaitResponse.decode(data).exited_at
    assert ts == timestamp_pb.Timestamp(seconds=5, nanos=7)


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",  # truncated varint
        b"\x0a\x05ab",  # length past the end
        b"\x08" + b"\xff" * 10 + b"\x01",  # varint longer than 10 bytes
        b"\x0b",  # group start: not proto3
        b"\x00\x01",  # field number 0
        b"\x0d\x00",  # truncated fixed32
    ],
)
def test_malformed_input_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        task_pb.StateRequest.decode(data)


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(DecodeError, match="utf-8"):
        task_pb.StateRequest.decode(b"\x0a\x01\xff")


def test_decode_error_is_invalid_argument() -> None:
    assert issubclass(DecodeError, InvalidArgument)


@pytest.mark.parametrize(
    "msg",
    [
        task_pb.StartResponse(pid=-1),
        task_pb.StartResponse(pid=1 << 32),
        task_pb.KillRequest(all=1),  # type: ignore[arg-type]
        task_pb.KillRequest(signal="9"),  # type: ignore[arg-type]
        task_pb.StateRequest(id=b"c1"),  # type: ignore[arg-type]
        task_pb.StateRequest(id=None),  # type: ignore[arg-type]
        task_pb.WaitResponse(exited_at=task_pb.StartResponse()),  # type: ignore[arg-type]
    ],
)
def test_encode_rejects_wrong_types_and_ranges(msg: Message) -> None:
    with pytest.raises(InvalidArgument):
        msg.encode()


def test_enums_are_ints() -> None:
    resp = task_pb.StateResponse(status=task_types_pb.Status.STOPPED)
    assert resp.encode() == b"\x20\x03"
    assert task_pb.StateResponse.decode(b"\x20\x03").status == task_types_pb.Status.STOPPED
    # Open enums: a value this version does not know is kept.
    assert task_pb.StateResponse.decode(b"\x20\x09").status == 9


def test_any_uses_containerd_type_urls() -> None:
    event = events_pb.TaskOOM(container_id="c1")
    packed = wkt.pack_any(event)
    assert packed.type_url == "containerd.events.TaskOOM"
    assert packed.encode() == b"\x0a\x19containerd.events.TaskOOM" + b"\x12\x04\x0a\x02c1"
    assert wkt.unpack_any(packed, events_pb.TaskOOM) == event
    prefixed = any_pb.Any(type_url="type.googleapis.com/containerd.events.TaskOOM", value=b"")
    assert wkt.unpack_any(prefixed, events_pb.TaskOOM) == events_pb.TaskOOM()
    with pytest.raises(InvalidArgument, match=r"containerd\.events\.TaskExit"):
        wkt.unpack_any(packed, events_pb.TaskExit)


def test_timestamp_helpers() -> None:
    assert wkt.timestamp_to_ns(None) == 0
    ts = wkt.timestamp_from_ns(-1)  # just before the epoch: nanos stay non-negative
    assert (ts.seconds, ts.nanos) == (-1, 999_999_999)
    assert wkt.timestamp_to_ns(wkt.timestamp_now()) > 1_600_000_000 * 10**9


def test_repr_and_equality() -> None:
    a = task_pb.StateRequest(id="c1")
    assert repr(a) == "StateRequest(id='c1')"
    assert a == task_pb.StateRequest(id="c1")
    assert a != task_pb.StateRequest(id="c2")
    assert a != task_pb.WaitRequest(id="c1")
