"""The image library: references, registries, the content store, image metadata, pulls.

The daemon uses :class:`ImageService`; the pieces (reference parsing, the registry client, the
content store, the puller) are importable on their own.  Unpacked layers and container
snapshots live in :mod:`kettle.snapshot`.
"""

from __future__ import annotations

from kettle.image.config import Healthcheck, ImageConfig
from kettle.image.credentials import Credential, CredentialStore
from kettle.image.metadata import ImageRecord
from kettle.image.platform import Platform, host_platform, parse_platform
from kettle.image.pull import PullEvent, PullStats
from kettle.image.reference import Reference, parse_reference
from kettle.image.service import DEFAULT_ROOT, ImageService, RegistryOptions

__all__ = [
    "DEFAULT_ROOT",
    "Credential",
    "CredentialStore",
    "Healthcheck",
    "ImageConfig",
    "ImageRecord",
    "ImageService",
    "Platform",
    "PullEvent",
    "PullStats",
    "Reference",
    "RegistryOptions",
    "host_platform",
    "parse_platform",
    "parse_reference",
]
