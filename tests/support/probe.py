"""Running the probe program inside a container and reading what it reports."""

from __future__ import annotations

import json
from typing import Any

from tests.support.bundle import Bundle
from tests.support.containers import Containers

CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip


def caps_from_mask(hexmask: str) -> set[str]:
    """The capability names set in a /proc/<pid>/status Cap* hex mask."""
    mask = int(hexmask, 16)
    return {name for bit, name in enumerate(CAPS) if mask & (1 << bit)}


def parse_json_line(text: str) -> dict[str, Any]:
    """The last line of `text` that parses as a JSON object (the probe prints exactly one)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise AssertionError(f"no JSON object in probe output:\n{text}")


def run_probe(containers: Containers, bundle: Bundle, *args: str) -> dict[str, Any]:
    """Runs `probe ARGS` as the container's process (foreground `run`) and parses its report."""
    bundle.set_args("/bin/probe", *args)
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    return parse_json_line(result.stdout)


def mount_points(report: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """mount point -> (mount options, fs type, super options) from the probe's mountinfo."""
    mounts = {}
    for line in report["mountinfo"]:
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, _source, super_opts = [*right.split(), "", ""][:3]
        mounts[fields[4]] = (fields[5], fstype, super_opts)
    return mounts
