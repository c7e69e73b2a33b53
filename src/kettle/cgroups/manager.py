"""The interface every cgroup manager offers (v1/hybrid, v2, and none for rootless).

A module of its own so that importing :mod:`kettle.cgroups` does not import typing: only type
checkers and code that asks for ``kettle.cgroups.Manager`` load it.
"""

from __future__ import annotations

# _collections_abc is loaded with the interpreter; collections.abc imports collections (~2 ms).
from _collections_abc import Mapping
from typing import Any, Protocol


class Manager(Protocol):
    def create(self) -> None:
        """mkdir every needed hierarchy directory (idempotent).

        On v2 it also enables the offered controllers in the parents' cgroup.subtree_control.
        A directory that already existed and holds processes is refused, as runc does.
        """

    def apply(self, pid: int) -> None:
        """Move pid into the cgroup (every hierarchy)."""

    def set(
        self,
        resources: Mapping[str, Any],
        *,
        linux_devices: Any = None,
        default_devices: bool = True,
    ) -> None:
        """Apply OCI linux.resources (the whole object, as in config.json); also for ``update``.

        The device filter is rebuilt each time from resources.devices, then allow rules for
        linux_devices (OCI linux.devices, the nodes the runtime creates), then runc's default
        allowed devices unless default_devices is False.
        """

    def freeze(self) -> None:
        """Freeze, returning once the kernel reports the cgroup FROZEN."""

    def thaw(self) -> None: ...

    def is_frozen(self) -> bool: ...

    def pids(self) -> list[int]:
        """Every pid in the cgroup and the cgroups below it."""

    def kill_all(self, sig: int) -> None:
        """Signal every process: cgroup.kill for SIGKILL where present, else freeze/signal/thaw."""

    def stats(self) -> dict[str, Any]:
        """The "data" object of ``runc events --stats``."""

    def oom_kill_count(self) -> int: ...

    def destroy(self) -> None:
        """rmdir what create() made (retrying briefly on EBUSY); nothing else is touched."""

    def exists(self) -> bool: ...

    def to_state(self) -> dict[str, Any]:
        """JSON-able; from_state() turns it back into a manager."""

    def path(self, controller: str = "") -> str | None:
        """The container's cgroup directory for controller (v1), or the one directory (v2)."""
