"""The cgroup v2 device filter: a BPF_PROG_TYPE_CGROUP_DEVICE program assembled from rules.

The program decides each requested operation (mknod, read, write) on its own, walking the
rules from last to first and taking the first that matches: the meaning of
:func:`kettle.cgroups.devices.allowed`.  A request passes when every operation in it does.

Context (struct bpf_cgroup_dev_ctx): u32 access_type = (access << 16) | type, u32 major,
u32 minor; type 1 = block, 2 = char; access 1 = mknod, 2 = read, 4 = write.
"""

from __future__ import annotations

import struct
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from collections.abc import Sequence

    from kettle.cgroups.devices import Rule

DEV_BLOCK = 1
DEV_CHAR = 2
ACC_MKNOD = 1
ACC_READ = 2
ACC_WRITE = 4

_TYPE = {"b": DEV_BLOCK, "c": DEV_CHAR}
_OPS = (("m", ACC_MKNOD), ("r", ACC_READ), ("w", ACC_WRITE))

# Opcodes (class | size/op | source).
LDXW = 0x61  # BPF_LDX | BPF_W | BPF_MEM
AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
MOV32_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
JA = 0x05  # BPF_JMP | BPF_JA
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
EXIT = 0x95  # BPF_JMP | BPF_EXIT

R0, R1, R2, R3, R4, R5 = range(6)


class Insn:
    # A plain class, not a dataclass: importing dataclasses costs about 10 ms per update.
    __slots__ = ("code", "dst", "imm", "off", "src", "target")

    def __init__(
        self,
        code: int,
        dst: int = 0,
        src: int = 0,
        off: int = 0,
        imm: int = 0,
        target: str | None = None,
    ) -> None:
        self.code = code
        self.dst = dst
        self.src = src
        self.off = off
        self.imm = imm
        #: a label to jump to, resolved into off by assemble()
        self.target = target

    def __repr__(self) -> str:
        return (
            f"Insn(code={self.code:#04x}, dst={self.dst}, src={self.src}, off={self.off}, "
            f"imm={self.imm}, target={self.target!r})"
        )

    def encode(self) -> bytes:
        # struct bpf_insn's register nibbles follow the byte order of the bitfields.
        little = sys.byteorder == "little"
        regs = (self.src << 4) | self.dst if little else (self.dst << 4) | self.src
        return struct.pack("=BBhi", self.code, regs, self.off, self.imm)


class _Asm:
    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}

    def emit(self, insn: Insn) -> None:
        self.insns.append(insn)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def exit_with(self, value: int) -> None:
        self.emit(Insn(MOV32_K, R0, imm=value))
        self.emit(Insn(EXIT))

    def assemble(self) -> list[Insn]:
        for pc, insn in enumerate(self.insns):
            if insn.target is not None:
                insn.off = self.labels[insn.target] - pc - 1
        return self.insns


def program(rules: Sequence[Rule]) -> list[Insn]:
    """The instructions of the filter for rules (default deny)."""
    a = _Asm()
    a.emit(Insn(LDXW, R2, R1, 0))
    a.emit(Insn(AND32_K, R2, imm=0xFFFF))
    a.emit(Insn(LDXW, R3, R1, 0))
    a.emit(Insn(RSH32_K, R3, imm=16))
    a.emit(Insn(LDXW, R4, R1, 4))
    a.emit(Insn(LDXW, R5, R1, 8))
    for op, bit in _OPS:
        done = f"done_{op}"
        a.emit(Insn(MOV32_X, R1, R3))
        a.emit(Insn(AND32_K, R1, imm=bit))
        a.emit(Insn(JEQ_K, R1, imm=0, target=done))
        decided = False
        for idx, rule in enumerate(reversed(rules)):
            if op not in rule.access:
                continue
            nxt = f"next_{op}_{idx}"
            tests = []
            if rule.type != "a":
                tests.append(Insn(JNE_K, R2, imm=_TYPE[rule.type], target=nxt))
            if rule.major != -1:
                tests.append(Insn(JNE_K, R4, imm=rule.major, target=nxt))
            if rule.minor != -1:
                tests.append(Insn(JNE_K, R5, imm=rule.minor, target=nxt))
            for t in tests:
                a.emit(t)
            if rule.allow:
                a.emit(Insn(JA, target=done))
            else:
                a.exit_with(0)
            if not tests:
                # Matches every device: later rules could never run, and the verifier
                # refuses unreachable instructions.
                decided = True
                break
            a.label(nxt)
        if not decided:
            a.exit_with(0)
        a.label(done)
    a.exit_with(1)
    return a.assemble()


def compile_rules(rules: Sequence[Rule]) -> bytes:
    return b"".join(i.encode() for i in program(rules))
