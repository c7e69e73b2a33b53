"""kettle.v1 methods: lifecycle (not yet served)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
