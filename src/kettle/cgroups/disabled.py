"""The manager of a rootless container that gets no cgroup (v1, or no delegated v2 subtree)."""

from __future__ import annotations

from kettle.errors import FailedPrecondition, NotFound, PermissionDenied

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see kettle.cgroups.host
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Literal


class DisabledManager:
    mode: Literal["none"] = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def path(self, controller: str = "") -> str | None:
        return None

    def create(self) -> None:
        return None  # nothing to create: the container runs in the caller's cgroup

    def apply(self, pid: int) -> None:
        return None  # the process stays in the caller's cgroup; see reason

    def set(
        self,
        resources: Mapping[str, Any],
        *,
        linux_devices: Any = None,
        default_devices: bool = True,
    ) -> None:
        from kettle.cgroups import resources as resources_mod

        res = resources_mod.parse(resources, linux_devices, default_devices=default_devices)
        asked = resources_mod.requested(res)
        # Device rules are not "asked": a rootless container cannot reach devices it may not
        # open anyway, and runc ignores them there too.
        if asked:
            raise PermissionDenied(f"{asked[0]}: cannot set resource limits: {self.reason}")

    def freeze(self) -> None:
        raise FailedPrecondition(f"cannot pause a container without a cgroup: {self.reason}")

    def thaw(self) -> None:
        raise FailedPrecondition(f"cannot resume a container without a cgroup: {self.reason}")

    def is_frozen(self) -> bool:
        return False

    def pids(self) -> list[int]:
        return []  # unknown without a cgroup; exists() is False so callers track the init

    def kill_all(self, sig: int) -> None:
        raise FailedPrecondition(
            f"cannot signal all processes of a container without a cgroup: {self.reason}"
        )

    def stats(self) -> dict[str, Any]:
        raise NotFound(f"no cgroup statistics: {self.reason}")

    def oom_kill_count(self) -> int:
        return 0

    def destroy(self) -> None:
        return None  # nothing was created

    def exists(self) -> bool:
        return False

    def to_state(self) -> dict[str, Any]:
        return {"version": 1, "driver": "none", "mode": "none", "reason": self.reason}
