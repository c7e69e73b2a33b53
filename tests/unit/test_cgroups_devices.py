"""Device rules: parsing, meaning, the v1 translation, and the v2 BPF program.

The BPF program is checked by running it on a tiny interpreter of the few opcodes it uses and
comparing every decision with the Python meaning (devices.allowed) over many rule lists.
"""

from __future__ import annotations

import copy
import itertools
import pickle
import random
import struct

import pytest

from kettle.cgroups import devicefilter as df
from kettle.cgroups import devices as dv
from kettle.errors import InvalidArgument

R = dv.Rule

# --- parsing ---------------------------------------------------------------------------------


def test_parse_rules_defaults_and_wildcards() -> None:
    rules = dv.parse_rules(
        [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "wr"},
            {"allow": True, "type": "b", "major": 8, "minor": None},
        ]
    )
    assert rules == [R(False), R(True, "c", 1, 3, "rw"), R(True, "b", 8, -1, "rwm")]
    assert rules[1].origin == "linux.resources.devices[1]"
    assert rules[1].line() == "c 1:3 rw"
    assert rules[2].line() == "b 8:* rwm"


@pytest.mark.parametrize(
    ("item", "msg"),
    [
        ({"access": "rwm"}, r"devices\[0\]\.allow"),
        ({"allow": True, "type": "x"}, r"devices\[0\]\.type"),
        ({"allow": True, "access": "rwx"}, r"devices\[0\]\.access"),
        ({"allow": True, "major": -5}, r"devices\[0\]\.major"),
        ({"allow": True, "minor": "3"}, r"devices\[0\]\.minor"),
        ({"allow": True, "path": "/dev/null"}, "unknown field path"),
    ],
)
def test_parse_rules_errors_name_the_field(item: dict[str, object], msg: str) -> None:
    with pytest.raises(InvalidArgument, match=msg):
        dv.parse_rules([item])


def test_container_rules_append_linux_devices_then_runc_defaults() -> None:
    rules = dv.container_rules(
        [{"allow": False, "access": "rwm"}],
        [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
            {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
            {"path": "/dev/fifo", "type": "p"},
        ],
    )
    assert rules[0] == R(False)
    assert rules[1:3] == [R(True, "c", 10, 229), R(True, "b", 8, 0)]
    assert tuple(rules[3:]) == dv.DEFAULT_ALLOWED
    # the spec cannot take the defaults away (runc appends them last)
    denied = dv.container_rules([{"allow": False, "type": "c", "major": 1, "minor": 3}])
    assert dv.allowed(denied, "c", 1, 3, "rw")
    assert not dv.allowed(dv.container_rules(None, defaults=False), "c", 1, 3, "r")


def test_rule_is_a_frozen_value_that_ignores_its_origin() -> None:
    a = R(True, "c", 1, 3, "rw", origin="linux.devices[0]")
    b = R(True, "c", 1, 3, "rw", origin="default device rule /dev/null")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != R(True, "c", 1, 3, "r") and a != R(False, "c", 1, 3, "rw")
    assert a != ("c", 1, 3)
    with pytest.raises(AttributeError):
        a.major = 5
    with pytest.raises(AttributeError):
        del a.access
    for again in (copy.copy(a), copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert again == a and again.origin == a.origin
    assert repr(R(False)) == (
        "Rule(allow=False, type='a', major=-1, minor=-1, access='rwm', origin='')"
    )


def test_v1_state_equality() -> None:
    assert dv.V1State(False, {("c", 1, 3): "r"}) == dv.V1State(False, {("c", 1, 3): "r"})
    assert dv.V1State(True) != dv.V1State(True, exact=False)
    assert dv.V1State(False).exceptions is not dv.V1State(False).exceptions


# --- meaning ---------------------------------------------------------------------------------


def test_allowed_last_match_wins_per_operation() -> None:
    rules = [R(False), R(True, "c", -1, -1, "rwm"), R(False, "c", 1, 3, "w")]
    assert dv.allowed(rules, "c", 1, 3, "r")
    assert not dv.allowed(rules, "c", 1, 3, "w")
    assert not dv.allowed(rules, "c", 1, 3, "rw")  # any denied operation denies the open
    assert dv.allowed(rules, "c", 1, 5, "rw")
    assert not dv.allowed(rules, "b", 8, 0, "r")  # default deny
    assert dv.allowed([R(True, "c", 1, 3, "r"), R(True, "c", 1, 3, "w")], "c", 1, 3, "rw")


# --- cgroup v1 -------------------------------------------------------------------------------


def test_to_v1_docker_like_whitelist() -> None:
    st = dv.to_v1(dv.container_rules([{"allow": False, "access": "rwm"}]))
    assert not st.default_allow
    assert st.exceptions[("c", 1, 3)] == "rwm"
    assert st.exceptions[("c", -1, -1)] == "m"
    writes = dv.v1_writes(dv.V1State(default_allow=True, exact=False), st)
    assert writes[0] == ("devices.deny", "a")
    assert ("devices.allow", "c 1:3 rwm") in writes
    assert ("devices.allow", "c 136:* rwm") in writes


def test_to_v1_privileged_is_allow_all() -> None:
    st = dv.to_v1([R(True)])
    assert st.default_allow and not st.exceptions
    assert dv.v1_writes(None, st) == [("devices.allow", "a")]


def test_to_v1_splits_narrow_all_type_rules() -> None:
    # The kernel reads any line starting with "a" as "everything": never write "a 1:3 r".
    st = dv.to_v1([R(False), R(True, "a", 1, 3, "r")])
    assert st.exceptions == {("b", 1, 3): "r", ("c", 1, 3): "r"}
    assert all(not line.startswith("a ") for _, line in dv.v1_writes(None, st))


def test_to_v1_removes_covered_exceptions() -> None:
    st = dv.to_v1(
        [R(False), R(True, "c", 1, 3, "rw"), R(True, "c", 1, 5), R(False, "c", 1, -1, "w")]
    )
    assert st.exceptions == {("c", 1, 3): "r", ("c", 1, 5): "rm"}


def test_to_v1_refuses_holes_in_broader_rules() -> None:
    rules = dv.parse_rules(
        [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "access": "rwm"},
            {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
        ]
    )
    with pytest.raises(InvalidArgument, match=r"devices\[2\]: cgroup v1 cannot deny c 1:3 w"):
        dv.to_v1(rules)


def test_v1_writes_update_only_the_difference() -> None:
    old = dv.to_v1([R(False), R(True, "c", 1, 3), R(True, "c", 1, 5, "r")])
    current = dv.parse_v1_list("c 1:3 rwm\nc 1:5 r\n")
    assert current.exceptions == old.exceptions
    new = dv.to_v1([R(False), R(True, "c", 1, 3, "r"), R(True, "c", 1, 9)])
    writes = dv.v1_writes(current, new)
    assert writes == [
        ("devices.deny", "c 1:3 wm"),
        ("devices.deny", "c 1:5 r"),
        ("devices.allow", "c 1:9 rwm"),
    ]
    assert ("devices.deny", "a") not in writes


def test_parse_v1_list_allow_all_is_not_exact() -> None:
    st = dv.parse_v1_list("a *:* rwm\n")
    assert st.default_allow and not st.exact


UNIVERSE = [(t, mj, mn) for t in ("b", "c") for mj in (1, 5, 136) for mn in (0, 3, 5)]


def _random_rule(rng: random.Random) -> dv.Rule:
    access = "".join(c for c in "rwm" if rng.random() < 0.6) or "r"
    if rng.random() < 0.1:
        return R(rng.random() < 0.5, "a", -1, -1, "rwm")
    return R(
        rng.random() < 0.6,
        rng.choice("abcc"),
        rng.choice([-1, 1, 5, 136]),
        rng.choice([-1, -1, 0, 3, 5]),
        access,
    )


def test_to_v1_means_the_same_as_the_rules_or_refuses() -> None:
    rng = random.Random(7)
    translated = 0
    for _ in range(3000):
        rules = [_random_rule(rng) for _ in range(rng.randint(0, 6))]
        try:
            st = dv.to_v1(rules)
        except InvalidArgument:
            continue
        translated += 1
        for (t, mj, mn), op in itertools.product(UNIVERSE, "rwm"):
            assert st.allows(t, mj, mn, op) == dv.allowed(rules, t, mj, mn, op), (
                rules,
                t,
                mj,
                mn,
                op,
            )
    assert translated > 1000  # most lists are expressible; the test must exercise them


# --- the BPF program -------------------------------------------------------------------------


def run_bpf(code: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    """Interpret the opcodes devicefilter emits; anything else fails the test."""
    insns = [struct.unpack("=BBhi", code[i : i + 8]) for i in range(0, len(code), 8)]
    ctx = struct.pack("=III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    regs[1] = -1  # the context pointer; only loads through it are allowed
    pc = 0
    for _ in range(100_000):
        op, r, off, imm = insns[pc]
        dst, src = r & 0xF, r >> 4
        pc += 1
        if op == df.LDXW:
            assert regs[src] == -1 and 0 <= off <= 8
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif op == df.AND32_K:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif op == df.RSH32_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif op == df.MOV32_K:
            regs[dst] = imm & 0xFFFFFFFF
        elif op == df.MOV32_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif op == df.JA:
            pc += off
        elif op == df.JEQ_K:
            pc += off if regs[dst] == imm else 0
        elif op == df.JNE_K:
            pc += off if regs[dst] != imm else 0
        elif op == df.EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("program did not terminate")


def _reachable(code: bytes) -> set[int]:
    insns = [struct.unpack("=BBhi", code[i : i + 8]) for i in range(0, len(code), 8)]
    seen: set[int] = set()
    todo = [0]
    while todo:
        pc = todo.pop()
        if pc in seen:
            continue
        assert 0 <= pc < len(insns), "jump out of the program"
        seen.add(pc)
        op, _, off, _ = insns[pc]
        if op == df.EXIT:
            continue
        if op == df.JA:
            assert off >= 0, "backward jump"
            todo.append(pc + 1 + off)
            continue
        if op in (df.JEQ_K, df.JNE_K):
            assert off >= 0, "backward jump"
            todo.append(pc + 1 + off)
        todo.append(pc + 1)
    return seen


def test_program_prologue_bytes() -> None:
    code = df.compile_rules([])
    # ldxw r2,[r1+0]; and32 r2,0xffff; ldxw r3,[r1+0]; rsh32 r3,16; ldxw r4,[r1+4]; ldxw r5,[r1+8]
    assert code[:48] == bytes.fromhex(
        "6112000000000000"
        "54020000ffff0000"
        "6113000000000000"
        "7403000010000000"
        "6114040000000000"
        "6115080000000000"
    )
    # with no rules every requested operation is denied; a request of nothing passes
    assert run_bpf(code, df.DEV_CHAR, df.ACC_READ, 1, 3) == 0
    assert run_bpf(code, df.DEV_CHAR, 0, 1, 3) == 1
    assert code[-16:] == bytes.fromhex("b4000000010000009500000000000000")


def test_program_for_one_rule() -> None:
    code = df.compile_rules([R(True, "c", 1, 3, "r")])
    assert run_bpf(code, df.DEV_CHAR, df.ACC_READ, 1, 3) == 1
    assert run_bpf(code, df.DEV_CHAR, df.ACC_READ | df.ACC_WRITE, 1, 3) == 0
    assert run_bpf(code, df.DEV_BLOCK, df.ACC_READ, 1, 3) == 0
    assert run_bpf(code, df.DEV_CHAR, df.ACC_READ, 1, 5) == 0
    assert len(_reachable(code)) == len(code) // 8


def test_program_matches_rules_everywhere() -> None:
    rng = random.Random(11)
    bits = {"m": df.ACC_MKNOD, "r": df.ACC_READ, "w": df.ACC_WRITE}
    for _ in range(400):
        rules = [_random_rule(rng) for _ in range(rng.randint(0, 8))]
        code = df.compile_rules(rules)
        # the verifier refuses unreachable instructions and backward jumps
        assert len(_reachable(code)) == len(code) // 8, rules
        for t, mj, mn in UNIVERSE:
            for n in range(1, 4):
                for ops in itertools.combinations("mrw", n):
                    access = sum(bits[o] for o in ops)
                    want = dv.allowed(rules, t, mj, mn, "".join(ops))
                    got = run_bpf(code, df.DEV_BLOCK if t == "b" else df.DEV_CHAR, access, mj, mn)
                    assert got == int(want), (rules, t, mj, mn, ops)


def test_program_for_runc_defaults_is_small() -> None:
    code = df.compile_rules(dv.container_rules([{"allow": False, "access": "rwm"}]))
    assert len(code) // 8 < 200
    assert run_bpf(code, df.DEV_CHAR, df.ACC_READ | df.ACC_WRITE, 1, 3) == 1
    assert run_bpf(code, df.DEV_CHAR, df.ACC_MKNOD, 4, 4) == 1
    assert run_bpf(code, df.DEV_CHAR, df.ACC_READ, 4, 4) == 0
    assert run_bpf(code, df.DEV_BLOCK, df.ACC_READ, 8, 0) == 0
