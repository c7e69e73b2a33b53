"""What every part of kettled shares: its configuration, stores and services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kettle.daemon.bus import EventBus
    from kettle.daemon.config import Config
    from kettle.daemon.containers import Containers
    from kettle.image.service import ImageService


@dataclass
class Daemon:
    config: Config
    images: ImageService
    containers: Containers
    bus: EventBus
