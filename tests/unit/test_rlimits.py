"""process.rlimits: parsing, validation and the setrlimit calls (faked)."""

from __future__ import annotations

import resource
from typing import Any

import pytest

from kettle.errors import FailedPrecondition, InvalidArgument, SyscallError
from kettle.runtime import rlimits

UNLIMITED = (1 << 64) - 1


def rl(kind: str = "RLIMIT_NOFILE", soft: Any = 100, hard: Any = 200) -> dict[str, Any]:
    return {"type": kind, "soft": soft, "hard": hard}


def test_all_sixteen() -> None:
    assert len(rlimits.RLIMITS) == 16
    assert rlimits.RLIMITS["RLIMIT_NOFILE"] == resource.RLIMIT_NOFILE
    assert rlimits.RLIMITS["RLIMIT_RTTIME"] == resource.RLIMIT_RTTIME
    assert len(set(rlimits.RLIMITS.values())) == 16


def test_parse() -> None:
    parsed = rlimits.parse([rl(), rl("RLIMIT_CORE", 0, UNLIMITED)])
    assert [(p.field, p.type, p.resource, p.soft, p.hard) for p in parsed] == [
        ("process.rlimits[0]", "RLIMIT_NOFILE", resource.RLIMIT_NOFILE, 100, 200),
        ("process.rlimits[1]", "RLIMIT_CORE", resource.RLIMIT_CORE, 0, UNLIMITED),
    ]
    assert rlimits.parse(None) == []


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([rl("RLIMIT_FOO")], r"^process\.rlimits\[0\]\.type: unknown rlimit RLIMIT_FOO$"),
        (
            [rl(), rl("RLIMIT_CORE"), rl()],
            r"^process\.rlimits\[2\]\.type: RLIMIT_NOFILE is already",
        ),
        (
            [rl(soft=300, hard=200)],
            r"^process\.rlimits\[0\]: RLIMIT_NOFILE soft limit 300 is above",
        ),
        ([rl(soft=UNLIMITED, hard=5)], r"soft limit unlimited is above its hard limit 5"),
        ([rl(soft=-1)], r"^process\.rlimits\[0\]\.soft: -1 is out of range"),
        ([rl(hard=1 << 64)], r"^process\.rlimits\[0\]\.hard: .* out of range"),
        ([rl(hard=1 << 63)], r"^process\.rlimits\[0\]\.hard: .* too large; 18446744073709551615"),
        ([rl(soft="1")], r"^process\.rlimits\[0\]\.soft: must be an unsigned integer, not str"),
        ([rl(soft=True)], r"\.soft: must be an unsigned integer, not bool"),
        ([{"type": "RLIMIT_NOFILE", "soft": 1}], r"^process\.rlimits\[0\]\.hard: missing"),
        ([{**rl(), "max": 1}], r"^process\.rlimits\[0\]: unknown field 'max'"),
        (["RLIMIT_NOFILE=1"], r"^process\.rlimits\[0\]: must be an object"),
    ],
)
def test_invalid(entries: list[Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        rlimits.validate(entries)


def test_not_a_list() -> None:
    with pytest.raises(InvalidArgument, match=r"^process\.rlimits: must be a list"):
        rlimits.validate({"RLIMIT_NOFILE": 1})  # type: ignore[arg-type]


def test_raising_a_hard_limit_without_the_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rlimits, "can_raise_hard_limits", lambda: False)
    monkeypatch.setattr(resource, "getrlimit", lambda r: (1024, 20000))
    with pytest.raises(FailedPrecondition) as info:
        rlimits.validate([rl("RLIMIT_CORE", 0, 0), rl("RLIMIT_NOFILE", 1024, 1048576)])
    assert str(info.value) == (
        "process.rlimits[1]: RLIMIT_NOFILE hard limit 1048576 is above the current hard limit"
        " 20000, and raising a hard limit needs CAP_SYS_RESOURCE, which this runtime lacks"
    )
    # Lowering, or keeping, a hard limit needs nothing.
    rlimits.validate([rl("RLIMIT_NOFILE", 1024, 20000)])


def test_raising_to_unlimited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rlimits, "can_raise_hard_limits", lambda: False)
    monkeypatch.setattr(resource, "getrlimit", lambda r: (10, 100))
    with pytest.raises(FailedPrecondition, match="hard limit unlimited is above the current hard"):
        rlimits.validate([rl("RLIMIT_CORE", 0, UNLIMITED)])
    monkeypatch.setattr(resource, "getrlimit", lambda r: (10, resource.RLIM_INFINITY))
    rlimits.validate([rl("RLIMIT_CORE", 0, UNLIMITED)])


def test_raising_with_the_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rlimits, "can_raise_hard_limits", lambda: True)
    monkeypatch.setattr(resource, "getrlimit", lambda r: (10, 100))
    monkeypatch.setattr(rlimits, "_nr_open", lambda: 1048576)
    rlimits.validate([rl("RLIMIT_NOFILE", 10, 1048576)])
    with pytest.raises(FailedPrecondition, match=r"RLIMIT_NOFILE hard limit 1048577 is above fs\."):
        rlimits.validate([rl("RLIMIT_NOFILE", 10, 1048577)])


def test_can_raise_hard_limits_answers_for_this_machine() -> None:
    from kettle import syscalls as sc

    effective, _, _ = sc.capget()
    if not effective >> 24 & 1:
        assert rlimits.can_raise_hard_limits() is False


def test_apply_sets_each(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, tuple[int, int]]] = []
    monkeypatch.setattr(resource, "prlimit", lambda pid, r, lim: calls.append((pid, r, lim)))
    rlimits.apply([rl("RLIMIT_NOFILE", 512, 1024), rl("RLIMIT_CORE", UNLIMITED, UNLIMITED)])
    assert calls == [
        (0, resource.RLIMIT_NOFILE, (512, 1024)),
        (0, resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)),
    ]


def test_apply_error_names_the_rlimit(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int, r: int, lim: tuple[int, int]) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(resource, "prlimit", refuse)
    with pytest.raises(SyscallError) as info:
        rlimits.apply([rl("RLIMIT_NOFILE", 512, 1 << 30)])
    assert info.value.errno == 1
    assert "process.rlimits[0]: RLIMIT_NOFILE soft 512 hard 1073741824" in str(info.value)
    assert "needs CAP_SYS_RESOURCE" in str(info.value)


def test_apply_einval(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int, r: int, lim: tuple[int, int]) -> None:
        raise ValueError("current limit exceeds maximum limit")

    monkeypatch.setattr(resource, "prlimit", refuse)
    with pytest.raises(SyscallError, match=r"RLIMIT_NICE soft 1 hard 2\): invalid argument"):
        rlimits.apply([rl("RLIMIT_NICE", 1, 2)])
