"""process.capabilities: names, masks, validation, and the syscalls apply/drop make (faked)."""

from __future__ import annotations

from typing import Any

import pytest

from kettle import syscalls as sc
from kettle.errors import InvalidArgument, SyscallError
from kettle.runtime import caps


@pytest.fixture
def last_cap_40(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "_last_cap", 40)


@pytest.fixture
def last_cap_37(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5.4-era kernel: no CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE."""
    monkeypatch.setattr(caps, "_last_cap", 37)


def test_table_is_complete_and_dense() -> None:
    assert len(caps.CAPS) == 41
    assert sorted(caps.CAPS.values()) == list(range(41))
    assert caps.CAPS["CAP_CHOWN"] == 0
    assert caps.CAPS["CAP_SYS_ADMIN"] == 21
    assert caps.CAPS["CAP_CHECKPOINT_RESTORE"] == 40


def test_last_cap_matches_the_kernel() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        assert caps.last_cap() == int(fh.read())


def test_probe_last_cap_without_proc() -> None:
    # The fallback asks PR_CAPBSET_READ, which is how the init finds it without /proc.
    assert caps._probe_last_cap() == caps.last_cap()


@pytest.mark.usefixtures("last_cap_40")
def test_parse_caps_mask() -> None:
    mask = caps.parse_caps(["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_CHECKPOINT_RESTORE"], "f")
    assert mask == (1 << 0) | (1 << 12) | (1 << 40)
    assert caps.parse_caps([], "f") == 0
    assert caps.parse_caps(["CAP_KILL", "CAP_KILL"], "f") == 1 << 5


@pytest.mark.usefixtures("last_cap_40")
def test_parse_caps_unknown_name_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        caps.parse_caps(["CAP_CHOWN", "CAP_FLY"], "process.capabilities.bounding")
    assert str(info.value) == "process.capabilities.bounding: unknown capability CAP_FLY"
    with pytest.raises(InvalidArgument, match="unknown capability chown"):
        caps.parse_caps(["chown"], "f")


@pytest.mark.usefixtures("last_cap_40")
def test_parse_caps_wrong_types() -> None:
    with pytest.raises(InvalidArgument, match=r"^f: must be a list"):
        caps.parse_caps("CAP_CHOWN", "f")
    with pytest.raises(InvalidArgument, match=r"^f: 3 is not a capability name"):
        caps.parse_caps([3], "f")  # type: ignore[list-item]


@pytest.mark.usefixtures("last_cap_37")
def test_caps_newer_than_the_kernel_are_skipped() -> None:
    mask = caps.parse_caps(["CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF"], "f")
    assert mask == 1 << 37


def test_names() -> None:
    assert caps.names(0) == []
    assert caps.names((1 << 0) | (1 << 21) | (1 << 40)) == [
        "CAP_CHOWN",
        "CAP_SYS_ADMIN",
        "CAP_CHECKPOINT_RESTORE",
    ]
    assert caps.names(1 << 45) == ["CAP_45"]


@pytest.mark.usefixtures("last_cap_40")
def test_masks_of_a_spec() -> None:
    m = caps.masks(
        {
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"],
        }
    )
    assert m == {
        "bounding": 0b100001,
        "effective": 0b100000,
        "inheritable": 0,
        "permitted": 0b100000,
        "ambient": 0,
    }


def test_no_capabilities_object_means_none_at_all() -> None:
    assert caps.masks(None) == dict.fromkeys(caps.SETS, 0)


@pytest.mark.usefixtures("last_cap_40")
def test_unknown_set_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"^process\.capabilities: unknown set 'bounded'"):
        caps.validate({"bounded": []})
    with pytest.raises(InvalidArgument, match=r"^process\.capabilities: must be an object"):
        caps.validate(["CAP_CHOWN"])  # type: ignore[arg-type]


@pytest.mark.usefixtures("last_cap_40")
def test_validate_names_the_set() -> None:
    with pytest.raises(InvalidArgument, match=r"^process\.capabilities\.ambient: unknown capab"):
        caps.validate({"ambient": ["CAP_NOPE"]})


@pytest.mark.usefixtures("last_cap_40")
def test_effective_must_be_permitted() -> None:
    with pytest.raises(InvalidArgument, match=r"effective: CAP_KILL not in permitted"):
        caps.validate({"effective": ["CAP_CHOWN", "CAP_KILL"], "permitted": ["CAP_CHOWN"]})


@pytest.mark.usefixtures("last_cap_40")
def test_ambient_outside_permitted_and_inheritable_is_reported() -> None:
    # runc's own default spec has ambient but no inheritable set: valid, the ambient ones
    # just cannot take effect.
    spec = {
        "ambient": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
        "permitted": ["CAP_KILL", "CAP_CHOWN"],
        "inheritable": ["CAP_KILL", "CAP_NET_RAW"],
    }
    caps.validate(spec)
    assert caps.ineffective_ambient(spec) == ["CAP_CHOWN", "CAP_NET_RAW"]
    assert caps.ineffective_ambient(None) == []


# --- the syscalls, faked --------------------------------------------------------------------------


class FakeKernel:
    """Bounding set, capset and the ambient prctls of one process."""

    def __init__(self, bounding: int, *, setpcap: bool = True) -> None:
        self.bounding = bounding
        self.setpcap = setpcap
        self.calls: list[tuple[Any, ...]] = []

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, *_: int) -> int:
        self.calls.append(("prctl", option, arg2, arg3))
        if option == sc.PR_CAPBSET_READ:
            return self.bounding >> arg2 & 1
        if option == sc.PR_CAPBSET_DROP:
            if not self.setpcap:
                raise SyscallError("prctl", 1, detail="option 24")
            self.bounding &= ~(1 << arg2)
            return 0
        return 0

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self.calls.append(("capset", effective, permitted, inheritable))


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    monkeypatch.setattr(caps, "_last_cap", 40)
    k = FakeKernel((1 << 41) - 1)
    monkeypatch.setattr(sc, "prctl", k.prctl)
    monkeypatch.setattr(sc, "capset", k.capset)
    return k


def test_drop_bounding_keeps_only_the_spec_set(kernel: FakeKernel) -> None:
    caps.drop_bounding({"bounding": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]})
    assert kernel.bounding == (1 << 0) | (1 << 10)
    drops = [c[2] for c in kernel.calls if c[1] == sc.PR_CAPBSET_DROP]
    assert drops == [n for n in range(41) if n not in (0, 10)]


def test_drop_bounding_without_capabilities_drops_all(kernel: FakeKernel) -> None:
    caps.drop_bounding(None)
    assert kernel.bounding == 0


def test_drop_bounding_skips_what_is_already_gone(kernel: FakeKernel) -> None:
    kernel.bounding = 1 << 5
    kernel.setpcap = False  # nothing left to drop but CAP_KILL, which the spec keeps
    caps.drop_bounding({"bounding": ["CAP_KILL"]})
    assert not [c for c in kernel.calls if c[1] == sc.PR_CAPBSET_DROP]


def test_drop_bounding_error_names_the_capability(kernel: FakeKernel) -> None:
    kernel.setpcap = False
    with pytest.raises(SyscallError) as info:
        caps.drop_bounding({"bounding": []})
    assert "process.capabilities.bounding: dropping CAP_CHOWN needs CAP_SETPCAP" in str(info.value)
    assert info.value.errno == 1


def test_apply_order_and_values(kernel: FakeKernel) -> None:
    caps.apply(
        {
            "effective": ["CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
            "inheritable": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        }
    )
    assert kernel.calls == [
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL, 0),
        ("capset", 1 << 10, (1 << 10) | 1, (1 << 10) | (1 << 5)),
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, 10),
    ]


def test_apply_raises_only_ambient_caps_the_kernel_allows(kernel: FakeKernel) -> None:
    default_spec = {
        k: ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
        for k in ("bounding", "effective", "permitted", "ambient")
    }
    caps.apply(default_spec)
    assert kernel.calls == [
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL, 0),
        ("capset", (1 << 5) | (1 << 10), (1 << 5) | (1 << 10), 0),
    ]
    kernel.calls.clear()
    caps.apply({**default_spec, "inheritable": ["CAP_NET_BIND_SERVICE"]})
    assert kernel.calls[-1] == ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, 10)
    assert len(kernel.calls) == 3


def test_apply_none_clears_everything(kernel: FakeKernel) -> None:
    caps.apply(None)
    assert kernel.calls == [
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL, 0),
        ("capset", 0, 0, 0),
    ]


def test_apply_capset_error_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "_last_cap", 40)
    monkeypatch.setattr(sc, "prctl", lambda *a: 0)

    def refuse(*_: int) -> None:
        raise SyscallError("capset", 1)

    monkeypatch.setattr(sc, "capset", refuse)
    with pytest.raises(SyscallError, match=r"capset \(process\.capabilities: effective 0x1"):
        caps.apply({"effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]})


def test_apply_on_a_kernel_without_ambient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "_last_cap", 40)
    calls: list[tuple[int, ...]] = []

    def old_prctl(option: int, *args: int) -> int:
        if option == sc.PR_CAP_AMBIENT:
            raise SyscallError("prctl", 22)
        return 0

    monkeypatch.setattr(sc, "prctl", old_prctl)
    monkeypatch.setattr(sc, "capset", lambda *a: calls.append(a))
    caps.apply({"effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]})
    assert calls == [(1, 1, 0)]
    with pytest.raises(SyscallError, match=r"PR_CAP_AMBIENT_CLEAR_ALL.*process\.capabilities\.amb"):
        caps.apply(
            {"ambient": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"], "inheritable": ["CAP_CHOWN"]}
        )


def test_status_masks_of_this_process() -> None:
    effective, permitted, inheritable = sc.capget()
    m = caps.status_masks()
    assert (m["effective"], m["permitted"], m["inheritable"]) == (effective, permitted, inheritable)
    assert set(m) == set(caps.SETS)
    names = caps.current_names()
    assert names["effective"] == caps.names(effective)
