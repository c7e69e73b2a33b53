"""How the shim makes and drives containers: one interface, two implementations.

- :class:`~kettle.shim.backend.library.LibraryBackend` calls ``kettle.runtime`` in the shim's
  own process (the default: no interpreter start per operation);
- :class:`~kettle.shim.backend.binary.BinaryBackend` runs any runc-compatible binary
  (``kettle-runtime``, runc, crun) with the invocations containerd's runc shim uses.

Both leave the container's processes as descendants of the shim (it reaps them) and give the
process exactly the stdio fds they are handed.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from kettle.shim.config import ShimConfig
    from kettle.shim.reaper import Reaper

    class RuntimeBackend(Protocol):
        """One container runtime, bound to a state root."""

        def create(
            self,
            container_id: str,
            bundle: str,
            stdio: list[int | None],
            console_socket: str | None,
        ) -> int:
            """Create (not start) the container; return its init's host pid."""

        def start(self, container_id: str) -> None: ...

        def kill(self, container_id: str, sig: int, all_processes: bool) -> None:
            """NotFound when the container or its processes are gone."""

        def delete(self, container_id: str, force: bool) -> None:
            """Remove it; an unknown container is not an error."""

        def exec(
            self,
            container_id: str,
            exec_id: str,
            bundle: str,
            process: dict[str, Any],
            stdio: list[int | None],
            console_socket: str | None,
        ) -> int:
            """Start a process in the container; return its host pid."""

        def pause(self, container_id: str) -> None: ...

        def resume(self, container_id: str) -> None: ...

        def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

        def pids(self, container_id: str) -> list[int]: ...

        def stats(self, container_id: str) -> dict[str, Any]:
            """The ``data`` object of ``runc events --stats``."""


def new_backend(cfg: ShimConfig, namespace: str, reaper: Reaper, bundle: str) -> RuntimeBackend:
    """The backend cfg asks for: the library unless a binary is named."""
    root = cfg.runtime_root(namespace)
    if cfg.binary_name:
        from kettle.shim.backend.binary import BinaryBackend

        return BinaryBackend(cfg, root, reaper, bundle)
    from kettle.shim.backend.library import LibraryBackend

    return LibraryBackend(cfg, root, reaper)
