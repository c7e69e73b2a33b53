"""Building OCI bundles from Debian's busybox-static plus the compiled probe program."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
PROBE_SOURCE = Path(__file__).with_name("probe.c")

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

# What `runc spec` (1.1.5) writes, except process.terminal which is false so that tests can run
# containers without a console socket.
_DEFAULT_CONFIG: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": DEFAULT_ENV,
        "cwd": "/",
        "capabilities": {
            "bounding": DEFAULT_CAPS,
            "effective": DEFAULT_CAPS,
            "permitted": DEFAULT_CAPS,
            "ambient": DEFAULT_CAPS,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [
            {"type": "pid"},
            {"type": "network"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ],
    },
}


def default_config(args: list[str] | None = None) -> dict[str, Any]:
    """A fresh copy of runc's default spec (terminal false), optionally with process.args."""
    config = copy.deepcopy(_DEFAULT_CONFIG)
    if args is not None:
        config["process"]["args"] = list(args)
    return config


def new_id(prefix: str = "kt") -> str:
    """A container id unique to this test run, recognisable in leak reports."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def build_probe(dest: Path) -> Path:
    """Compiles probe.c statically into dest (a file path) and returns it."""
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is not installed (scripts/install.sh installs it)")
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(dest), str(PROBE_SOURCE)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dest


def build_rootfs(dest: Path, probe: Path | None = None) -> Path:
    """A minimal root filesystem: busybox with every applet as a symlink, plus the probe."""
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "usr/bin", "var", "run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX.resolve(), dest / "bin" / "busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            link = dest / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/:/bin/false\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n")
    (dest / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    if probe is not None:
        shutil.copy2(probe, dest / "bin" / "probe")
    return dest


@dataclass
class Bundle:
    """One OCI bundle on disk: `path/config.json` and `path/rootfs`."""

    path: Path
    id: str
    config: dict[str, Any] = field(default_factory=default_config)

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def process(self) -> dict[str, Any]:
        process: dict[str, Any] = self.config["process"]
        return process

    @property
    def linux(self) -> dict[str, Any]:
        linux: dict[str, Any] = self.config.setdefault("linux", {})
        return linux

    def set_args(self, *args: str) -> Bundle:
        self.process["args"] = list(args)
        return self

    def add_mount(self, destination: str, type_: str, source: str, options: list[str]) -> Bundle:
        self.config.setdefault("mounts", []).append(
            {"destination": destination, "type": type_, "source": source, "options": options}
        )
        return self

    def writable(self) -> Bundle:
        self.config["root"]["readonly"] = False
        return self

    def add_tmp(self) -> Bundle:
        """A tmpfs at /tmp so a read-only root still has a writable place."""
        return self.add_mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"])

    def set_namespace(self, type_: str, path: str | None = None) -> Bundle:
        namespaces = [n for n in self.linux.get("namespaces", []) if n["type"] != type_]
        entry: dict[str, str] = {"type": type_}
        if path is not None:
            entry["path"] = path
        namespaces.append(entry)
        self.linux["namespaces"] = namespaces
        return self

    def drop_namespace(self, type_: str) -> Bundle:
        self.linux["namespaces"] = [
            n for n in self.linux.get("namespaces", []) if n["type"] != type_
        ]
        return self

    def write(self) -> Path:
        """Writes config.json (call after every change to `config`)."""
        target = self.path / "config.json"
        target.write_text(json.dumps(self.config, indent=2))
        return target


class BundleFactory:
    """Makes bundles under `base`, each a copy of one template rootfs built once per session."""

    def __init__(self, base: Path, template: Path) -> None:
        self.base = base
        self.template = template
        self.made: list[Bundle] = []

    def make(self, *args: str, id: str | None = None, write: bool = True) -> Bundle:
        cid = id or new_id()
        path = self.base / cid
        path.mkdir(parents=True)
        # cp -a keeps the symlinks and is faster than shutil.copytree for ~400 entries.
        subprocess.run(["cp", "-a", str(self.template), str(path / "rootfs")], check=True)
        bundle = Bundle(path=path, id=cid, config=default_config(list(args) if args else None))
        if write:
            bundle.write()
        self.made.append(bundle)
        return bundle

    def remove(self, bundle: Bundle) -> None:
        if bundle.path.exists():
            shutil.rmtree(bundle.path, ignore_errors=False)


def chmod_tree_for(path: Path, uid: int, gid: int) -> None:
    """Hands a bundle to an unprivileged user (rootless tests)."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(path, uid, gid)
