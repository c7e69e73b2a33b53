"""What this runtime supports, in the shape of runc's `features` output."""

from __future__ import annotations

from typing import Any

from kettle.runtime.hooks import KINDS as HOOK_KINDS
from kettle.runtime.namespaces import KINDS as NS_KINDS


def libseccomp_version() -> str:
    try:
        from kettle.runtime import seccomp

        return seccomp.libseccomp_version()
    except Exception as e:
        return f"unavailable ({e})"


def features() -> dict[str, Any]:
    from kettle import cgroups
    from kettle.runtime import caps, mounts, seccomp
    from kettle.runtime.init import apparmor_enabled, selinux_enabled

    mode = cgroups.detect_mode()
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted(mounts.KNOWN_OPTIONS),
        "linux": {
            "namespaces": list(NS_KINDS),
            "capabilities": sorted(caps.CAPS, key=lambda n: caps.CAPS[n]),
            "cgroup": {
                "v1": mode in ("v1", "hybrid"),
                "v2": mode in ("v2", "hybrid"),
                "systemd": False,
                "systemdUser": False,
                "rdma": False,
            },
            "seccomp": {
                "enabled": True,
                "actions": list(seccomp.SUPPORTED_ACTIONS),
                "operators": list(seccomp.SUPPORTED_OPERATORS),
                "archs": seccomp.supported_archs(),
                "knownFlags": list(getattr(seccomp, "KNOWN_FLAGS", [])),
                "supportedFlags": list(getattr(seccomp, "SUPPORTED_FLAGS", [])),
            },
            "apparmor": {"enabled": apparmor_enabled()},
            "selinux": {"enabled": selinux_enabled()},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "org.opencontainers.runc.version": "kettle-runtime",
            "org.opencontainers.runc.commit": "",
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "io.github.seccomp.libseccomp.version": libseccomp_version(),
        },
    }
