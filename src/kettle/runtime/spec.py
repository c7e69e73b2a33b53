"""Loading and validating an OCI bundle's config.json before anything is created.

Validation runs in the runtime process, before the first fork, so a bad spec fails with one
clear message naming the field and nothing to clean up.  Fields the runtime does not implement
are refused loudly, never ignored.
"""

from __future__ import annotations

import os

from kettle.errors import FailedPrecondition, InvalidArgument, NotFound, oserror_text
from kettle.runtime import jsonio as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# Top-level and linux-level keys the runtime understands.  Properties the runtime-spec defines
# but kettle does not implement are refused (_UNSUPPORTED_*); properties the spec does not define
# at all are ignored, as the spec's extensibility rule requires ("runtimes MUST NOT generate an
# error if they encounter an unknown property").
_TOP = {
    "ociVersion",
    "process",
    "root",
    "hostname",
    "domainname",
    "mounts",
    "hooks",
    "annotations",
    "linux",
}
_LINUX = {
    "namespaces",
    "uidMappings",
    "gidMappings",
    "timeOffsets",
    "devices",
    "cgroupsPath",
    "resources",
    "rootfsPropagation",
    "seccomp",
    "sysctl",
    "maskedPaths",
    "readonlyPaths",
    "mountLabel",
    "personality",
    "intelRdt",
}
_UNSUPPORTED_TOP = {"solaris", "windows", "vm", "zos"}
_UNSUPPORTED_LINUX = {"netDevices", "memoryPolicy"}
_PROCESS = {
    "terminal",
    "consoleSize",
    "cwd",
    "env",
    "args",
    "commandLine",
    "rlimits",
    "apparmorProfile",
    "capabilities",
    "noNewPrivileges",
    "oomScoreAdj",
    "scheduler",
    "selinuxLabel",
    "ioPriority",
    "execCPUAffinity",
    "user",
}


def load(bundle: str) -> tuple[dict[str, Any], str]:
    """(config, absolute rootfs path) of the bundle."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"bundle config {path} does not exist") from None
    except OSError as e:
        raise InvalidArgument(f"cannot read {path}: {oserror_text(e)}") from None
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"malformed config {path}: {e}") from None
    if not isinstance(config, dict):
        raise InvalidArgument(f"malformed config {path}: not a json object")
    root = config.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str):
        raise InvalidArgument("root.path: missing")
    rootfs = root["path"]
    if not os.path.isabs(rootfs):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.realpath(rootfs)
    if not os.path.isdir(rootfs):
        raise NotFound(f"root.path: rootfs {rootfs} does not exist")
    return config, rootfs


def _unknown(
    obj: Mapping[str, Any], known: set[str], where: str, unsupported: set[str] | None = None
) -> None:
    """Refuse the spec-defined properties in ``unsupported`` (all unknown ones when None)."""
    for key in obj:
        if key not in known and (unsupported is None or key in unsupported):
            raise InvalidArgument(f"{where}{key}: not supported by kettle-runtime")


def validate_process(process: Any, where: str = "process") -> None:
    from kettle.runtime import caps, rlimits

    if not isinstance(process, dict):
        raise InvalidArgument(f"{where}: missing")
    _unknown(process, _PROCESS, f"{where}.", set())
    args = process.get("args")
    if not args or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise InvalidArgument(f"{where}.args: must be a non-empty list of strings")
    if "commandLine" in process:
        raise InvalidArgument(f"{where}.commandLine: windows only")
    cwd = process.get("cwd", "/")
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        raise InvalidArgument(f"{where}.cwd: must be an absolute path")
    for i, item in enumerate(process.get("env") or ()):
        if not isinstance(item, str) or "=" not in item:
            raise InvalidArgument(f"{where}.env[{i}]: must be KEY=value")
    user = process.get("user") or {}
    if not isinstance(user, dict):
        raise InvalidArgument(f"{where}.user: must be an object")
    for key in ("uid", "gid"):
        if not isinstance(user.get(key, 0), int) or user.get(key, 0) < 0:
            raise InvalidArgument(f"{where}.user.{key}: must be a non-negative integer")
    if "username" in user:
        raise InvalidArgument(f"{where}.user.username: windows only")
    caps.validate(process.get("capabilities"))
    rlimits.validate(process.get("rlimits"))
    if process.get("apparmorProfile"):
        from kettle.runtime.init import apparmor_enabled

        if not apparmor_enabled():
            raise FailedPrecondition(
                f"{where}.apparmorProfile: apparmor is not enabled on this host"
            )
    if process.get("selinuxLabel"):
        from kettle.runtime.init import selinux_enabled

        if not selinux_enabled():
            raise FailedPrecondition(f"{where}.selinuxLabel: selinux is not enabled on this host")


def validate(config: Mapping[str, Any]) -> None:
    from kettle.runtime import hooks, mounts, namespaces

    _unknown(config, _TOP, "", _UNSUPPORTED_TOP)
    if not isinstance(config.get("ociVersion"), str):
        raise InvalidArgument("ociVersion: missing")
    validate_process(config.get("process"))
    linux = config.get("linux") or {}
    if not isinstance(linux, dict):
        raise InvalidArgument("linux: must be an object")
    _unknown(linux, _LINUX, "linux.", _UNSUPPORTED_LINUX)
    plan = namespaces.plan(linux.get("namespaces"))
    if not plan.has("mount"):
        raise InvalidArgument("linux.namespaces: a mount namespace is required")
    if config.get("hostname") and not plan.has("uts"):
        raise InvalidArgument("hostname: needs a uts namespace")
    if config.get("domainname") and not plan.has("uts"):
        raise InvalidArgument("domainname: needs a uts namespace")
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in plan.new:
        raise InvalidArgument("linux.uidMappings: need a new user namespace")
    if "user" in plan.new and not (linux.get("uidMappings") and linux.get("gidMappings")):
        raise InvalidArgument("linux.uidMappings: a new user namespace needs uid and gid mappings")
    if linux.get("timeOffsets") and "time" not in plan.new:
        raise InvalidArgument("linux.timeOffsets: need a new time namespace")
    if linux.get("intelRdt"):
        raise InvalidArgument("linux.intelRdt: resctrl is not supported by kettle-runtime")
    if linux.get("mountLabel"):
        from kettle.runtime.init import selinux_enabled

        if not selinux_enabled():
            raise FailedPrecondition("linux.mountLabel: selinux is not enabled on this host")
        raise InvalidArgument("linux.mountLabel: selinux mount labels are not supported")
    for key in linux.get("sysctl") or {}:
        validate_sysctl(key, plan)
    pers = linux.get("personality")
    if pers:
        if pers.get("domain") not in ("LINUX", "LINUX32"):
            raise InvalidArgument(f"linux.personality.domain: unknown {pers.get('domain')!r}")
        if pers.get("flags"):
            raise InvalidArgument("linux.personality.flags: no flags are supported")
    if linux.get("seccomp"):
        from kettle.runtime import seccomp

        seccomp.validate(linux["seccomp"])
    mounts.validate(config)
    hooks.validate(config.get("hooks"))


_IPC_SYSCTLS = {
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
}


def validate_sysctl(key: str, plan: Any) -> None:
    """Only namespaced sysctls, each with its namespace, as runc allows."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if not plan.has("ipc"):
            raise InvalidArgument(f"linux.sysctl.{key}: needs an ipc namespace")
        return
    if key.startswith("net."):
        if "network" not in plan.new:
            raise InvalidArgument(f"linux.sysctl.{key}: needs a new network namespace")
        return
    if key in ("kernel.hostname", "kernel.domainname"):
        raise InvalidArgument(f"linux.sysctl.{key}: use the hostname/domainname fields")
    raise InvalidArgument(f"linux.sysctl.{key}: not a namespaced sysctl")


def write_sysctls(sysctl: Mapping[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            raise FailedPrecondition(
                f"linux.sysctl.{key}: write {path}: {oserror_text(e)}"
            ) from None
