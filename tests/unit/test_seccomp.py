"""linux.seccomp: validation and the translation to libseccomp rules (no root, no filter loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from kettle.errors import InvalidArgument, Unimplemented
from kettle.runtime import seccomp as rs

ALLOW = 0x7FFF0000
NOTIFY = 0x7FC00000
KILL_PROCESS = 0x80000000
KILL_THREAD = 0
TRAP = 0x00030000
LOG = 0x7FFC0000
EQ, NE, LT, LE, GE, GT, MASKED_EQ = 4, 1, 2, 3, 5, 6, 7


def errno_act(n: int) -> int:
    return 0x00050000 | n


def trace_act(n: int) -> int:
    return 0x7FF00000 | n


def profile(
    *syscalls: dict[str, Any], default: str = "SCMP_ACT_ALLOW", **extra: Any
) -> dict[str, Any]:
    return {"defaultAction": default, "syscalls": list(syscalls), **extra}


def libseccomp_or_skip() -> None:
    from kettle.errors import FailedPrecondition
    from kettle.syscalls import seccomp as scmp

    try:
        scmp.lib()
    except FailedPrecondition as exc:
        pytest.skip(str(exc))


# --- actions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCMP_ACT_KILL", KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", KILL_PROCESS),
        ("SCMP_ACT_TRAP", TRAP),
        ("SCMP_ACT_ERRNO", errno_act(1)),
        ("SCMP_ACT_TRACE", trace_act(1)),
        ("SCMP_ACT_ALLOW", ALLOW),
        ("SCMP_ACT_LOG", LOG),
        ("SCMP_ACT_NOTIFY", NOTIFY),
    ],
)
def test_every_action_translates(name: str, value: int) -> None:
    p = rs.plan(
        profile(
            {"names": ["mkdir"], "action": name},
            default="SCMP_ACT_LOG" if name == "SCMP_ACT_ALLOW" else "SCMP_ACT_ALLOW",
            listenerPath="/run/agent.sock",
        )
    )
    assert [r.action for r in p.rules] == [value]
    assert p.notify == (name == "SCMP_ACT_NOTIFY")


def test_supported_lists_cover_the_spec() -> None:
    assert len(rs.SUPPORTED_ACTIONS) == 9
    assert set(rs.SUPPORTED_OPERATORS) == {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }


def test_errno_ret_sets_the_errno_of_rule_and_default() -> None:
    p = rs.plan(
        profile(
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 4242},
            default="SCMP_ACT_ERRNO",
            defaultErrnoRet=13,
        )
    )
    assert p.default_action == errno_act(13)
    assert [(r.syscall, r.action) for r in p.rules] == [
        ("mkdir", errno_act(38)),
        ("ptrace", trace_act(4242)),
    ]


def test_errno_ret_rejected_on_an_action_without_data() -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.seccomp\.syscalls\[0\]\.errnoRet"):
        rs.plan(profile({"names": ["mkdir"], "action": "SCMP_ACT_KILL", "errnoRet": 1}))
    with pytest.raises(InvalidArgument, match=r"linux\.seccomp\.defaultErrnoRet"):
        rs.plan(profile(default="SCMP_ACT_ALLOW", defaultErrnoRet=1))


def test_errno_ret_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]\.errnoRet: 4096 is out of range"):
        rs.plan(profile({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4096}))
    with pytest.raises(InvalidArgument, match=r"errnoRet: must be an unsigned integer"):
        rs.plan(profile({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": True}))


def test_unknown_action_names_the_entry() -> None:
    spec = profile(*({"names": [f"s{i}"], "action": "SCMP_ACT_ERRNO"} for i in range(3)))
    spec["syscalls"].append({"names": ["mkdir"], "action": "SCMP_ACT_FOO"})
    with pytest.raises(InvalidArgument) as info:
        rs.plan(spec)
    assert str(info.value) == "linux.seccomp.syscalls[3].action: unknown action SCMP_ACT_FOO"


def test_unknown_default_action() -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp\.defaultAction: unknown action X"):
        rs.plan({"defaultAction": "X"})


def test_missing_default_action() -> None:
    with pytest.raises(InvalidArgument, match=r"defaultAction: missing"):
        rs.plan({"syscalls": []})


def test_rule_with_the_default_action_is_dropped() -> None:
    # libseccomp refuses such a rule with EACCES; it would change nothing anyway.
    p = rs.plan(
        profile(
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
        )
    )
    assert [r.syscall for r in p.rules] == ["mkdir"]


def test_errno_with_another_errno_than_the_default_is_kept() -> None:
    p = rs.plan(
        profile(
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"},
            default="SCMP_ACT_ERRNO",
            defaultErrnoRet=1,
        )
    )
    assert p.rules == ()


# --- names and args ---------------------------------------------------------------------------


def test_one_rule_per_name_with_field_of_each() -> None:
    p = rs.plan(profile({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}))
    assert [(r.field, r.syscall) for r in p.rules] == [
        ("linux.seccomp.syscalls[0].names[0]", "mkdir"),
        ("linux.seccomp.syscalls[0].names[1]", "mkdirat"),
    ]


def test_empty_names_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]\.names: must name at least one"):
        rs.plan(profile({"names": [], "action": "SCMP_ACT_ERRNO"}))
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]\.names\[1\]: empty syscall name"):
        rs.plan(profile({"names": ["mkdir", ""], "action": "SCMP_ACT_ERRNO"}))


@pytest.mark.parametrize(
    ("op", "num"),
    [
        ("SCMP_CMP_NE", NE),
        ("SCMP_CMP_LT", LT),
        ("SCMP_CMP_LE", LE),
        ("SCMP_CMP_EQ", EQ),
        ("SCMP_CMP_GE", GE),
        ("SCMP_CMP_GT", GT),
        ("SCMP_CMP_MASKED_EQ", MASKED_EQ),
    ],
)
def test_operators(op: str, num: int) -> None:
    p = rs.plan(
        profile(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 0xFF, "valueTwo": 8, "op": op}],
            }
        )
    )
    # value is datum_a (the mask for MASKED_EQ), valueTwo datum_b, whatever the operator.
    assert p.rules[0].args == ((0, num, 0xFF, 8),)


def test_args_on_different_indexes_are_one_rule() -> None:
    p = rs.plan(
        profile(
            {
                "names": ["getpriority"],
                "action": "SCMP_ACT_ERRNO",
                "args": [
                    {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"},
                ],
            }
        )
    )
    assert [r.args for r in p.rules] == [((0, EQ, 0, 0), (1, EQ, 0, 0))]


def test_args_on_the_same_index_become_one_rule_each() -> None:
    p = rs.plan(
        profile(
            {
                "names": ["personality", "ptrace"],
                "action": "SCMP_ACT_ERRNO",
                "args": [
                    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 3, "op": "SCMP_CMP_GT"},
                ],
            }
        )
    )
    assert [(r.syscall, r.args) for r in p.rules] == [
        ("personality", ((0, EQ, 8, 0),)),
        ("personality", ((0, EQ, 0x20000, 0),)),
        ("personality", ((1, GT, 3, 0),)),
        ("ptrace", ((0, EQ, 8, 0),)),
        ("ptrace", ((0, EQ, 0x20000, 0),)),
        ("ptrace", ((1, GT, 3, 0),)),
    ]


def test_missing_value_is_zero_like_runc() -> None:
    p = rs.plan(
        profile(
            {
                "names": ["x"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 2, "op": "SCMP_CMP_EQ"}],
            }
        )
    )
    assert p.rules[0].args == ((2, EQ, 0, 0),)


def test_full_64_bit_values() -> None:
    top = (1 << 64) - 1
    p = rs.plan(
        profile(
            {
                "names": ["x"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 5, "value": top, "valueTwo": top, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    )
    assert p.rules[0].args == ((5, MASKED_EQ, top, top),)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (
            {"index": 6, "value": 0, "op": "SCMP_CMP_EQ"},
            r"args\[0\]\.index: 6 is out of range 0\.\.5",
        ),
        ({"value": 0, "op": "SCMP_CMP_EQ"}, r"args\[0\]\.index: missing"),
        ({"index": 0, "value": 0}, r"args\[0\]\.op: missing"),
        ({"index": 0, "op": "SCMP_CMP_FOO"}, r"args\[0\]\.op: unknown operator SCMP_CMP_FOO"),
        ({"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}, r"args\[0\]\.value: -1 is out of range"),
        ({"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}, r"args\[0\]\.value: .* out of range"),
        ({"index": 0, "valueTwo": "1", "op": "SCMP_CMP_EQ"}, r"args\[0\]\.valueTwo: must be an"),
        ({"index": 0, "op": "SCMP_CMP_EQ", "mask": 1}, r"args\[0\]: unknown field 'mask'"),
    ],
)
def test_bad_args(arg: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp\.syscalls\[0\]\." + message):
        rs.plan(profile({"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [arg]}))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp: unknown field 'defaultErrno'"):
        rs.plan({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrno": "EPERM"})
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]: unknown field 'includes'"):
        rs.plan(profile({"names": ["x"], "action": "SCMP_ACT_ERRNO", "includes": {}}))


def test_wrong_types() -> None:
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp: must be an object"):
        rs.plan([])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"linux\.seccomp\.syscalls: must be a list"):
        rs.plan({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}})
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\]\.names\[0\]: must be a string"):
        rs.plan(profile({"names": [1], "action": "SCMP_ACT_ERRNO"}))


# --- architectures and flags ---------------------------------------------------------------------


def test_architectures_map_to_libseccomp_names() -> None:
    p = rs.plan(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]))
    assert [n for _, n in p.architectures] == ["x86_64", "x86", "x32"]
    assert p.architectures[2][0] == "linux.seccomp.architectures[2]"


def test_unknown_architecture() -> None:
    with pytest.raises(InvalidArgument, match=r"architectures\[1\]: unknown architecture SCMP_"):
        rs.plan(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]))


def test_flags() -> None:
    flags = [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ]
    assert [f for _, f in rs.plan(profile(flags=flags)).flags] == flags
    with pytest.raises(InvalidArgument, match=r"flags\[0\]: unknown or unsupported flag SECCOMP_F"):
        rs.plan(profile(flags=["SECCOMP_FILTER_FLAG_NEW_LISTENER"]))


# --- notify ---------------------------------------------------------------------------------------


def test_notify_needs_a_listener_path() -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.seccomp\.listenerPath: required"):
        rs.plan(profile({"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}))


def test_notify_cannot_be_the_default() -> None:
    with pytest.raises(InvalidArgument, match=r"defaultAction: SCMP_ACT_NOTIFY cannot be"):
        rs.plan({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/a.sock"})


@pytest.mark.parametrize("name", ["write", "sendmsg"])
def test_notify_refused_for_what_the_runtime_needs(name: str) -> None:
    with pytest.raises(
        InvalidArgument, match=rf"names\[1\]: SCMP_ACT_NOTIFY cannot be used for {name}"
    ):
        rs.plan(
            profile(
                {"names": ["mkdir", name], "action": "SCMP_ACT_NOTIFY"},
                listenerPath="/run/a.sock",
            )
        )


def test_listener_path_checks() -> None:
    with pytest.raises(InvalidArgument, match=r"listenerPath: run/a\.sock is not absolute"):
        rs.plan(profile(listenerPath="run/a.sock"))
    with pytest.raises(InvalidArgument, match=r"listenerPath: .* longer than a unix socket path"):
        rs.plan(profile(listenerPath="/" + "a" * 107))
    with pytest.raises(InvalidArgument, match=r"listenerMetadata: set without listenerPath"):
        rs.plan(profile(listenerMetadata="x"))
    p = rs.plan(profile(listenerPath="/run/a.sock", listenerMetadata="meta"))
    assert (p.listener_path, p.listener_metadata, p.notify) == ("/run/a.sock", "meta", False)


def test_container_process_state() -> None:
    raw = rs.container_process_state(
        pid=42, state={"id": "c1", "status": "creating"}, metadata="m=1"
    )
    assert json.loads(raw) == {
        "ociVersion": "1.0.2",
        "fds": ["seccompFd"],
        "pid": 42,
        "metadata": "m=1",
        "state": {"id": "c1", "status": "creating"},
    }


# --- helpers --------------------------------------------------------------------------------------


def test_action_names_round_trip() -> None:
    for name in rs.SUPPORTED_ACTIONS:
        value = rs.action_value(name, None, "f", "e")
        shown = rs.action_name(value)
        if name == "SCMP_ACT_KILL":
            assert shown == "SCMP_ACT_KILL_THREAD"
        elif name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            assert shown == f"{name}(1)"
        else:
            assert shown == name


def test_describe() -> None:
    lines = rs.describe(
        profile(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 22,
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
            },
            default="SCMP_ACT_LOG",
        )
    )
    assert lines == [
        "default SCMP_ACT_LOG",
        "personality SCMP_ACT_ERRNO(22) if arg0 SCMP_CMP_EQ 0x8,0x0",
    ]


def test_validate_none_is_nothing() -> None:
    rs.validate(None)


def test_import_and_plan_do_not_load_libseccomp() -> None:
    code = (
        "import sys\n"
        "import kettle.runtime.seccomp as rs\n"
        "rs.plan({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': "
        "[{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO'}]})\n"
        "rs.validate(None); rs.load(None)\n"
        "print('kettle.syscalls.seccomp' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


# --- against the installed libseccomp (no filter is loaded) ---------------------------------------


def test_validate_builds_a_full_profile() -> None:
    libseccomp_or_skip()
    spec = profile(
        {"names": ["mkdir", "no_such_syscall_at_all"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["socketcall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0xFF, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        if _native_is_x86()
        else [],
        flags=["SECCOMP_FILTER_FLAG_LOG"],
    )
    rs.validate(spec)
    rs.validate(spec, rules=True)
    assert rs.unknown_syscalls(spec) == ["no_such_syscall_at_all"]


def _native_is_x86() -> bool:
    import platform

    return platform.machine() == "x86_64"


def test_mixed_byte_orders_are_refused() -> None:
    libseccomp_or_skip()
    with pytest.raises(InvalidArgument, match=r"architectures\[1\]: ppc64 cannot share a filter"):
        rs.validate(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_PPC64"]))


def test_wait_killable_recv_needs_libseccomp_2_6() -> None:
    libseccomp_or_skip()
    from kettle.syscalls import seccomp as scmp

    if scmp.version() >= (2, 6, 0):
        pytest.skip("libseccomp 2.6 supports SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
    with pytest.raises(
        Unimplemented, match=r"flags\[0\]: .*WAIT_KILLABLE_RECV needs libseccomp 2\.6"
    ):
        rs.validate(profile(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]))


def test_version_and_archs() -> None:
    libseccomp_or_skip()
    version = rs.libseccomp_version()
    assert version.count(".") == 2 and all(p.isdigit() for p in version.split("."))
    archs = rs.supported_archs()
    assert "SCMP_ARCH_X86_64" in archs and "SCMP_ARCH_AARCH64" in archs
