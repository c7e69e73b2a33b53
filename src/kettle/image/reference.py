"""Image references, parsed and normalised the way Docker's distribution/reference does.

``busybox`` becomes ``docker.io/library/busybox:latest``; ``localhost:5000/a/b@sha256:...`` keeps
its registry, port and digest.  A reference that only names a digest gets no default tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kettle.errors import InvalidArgument
from kettle.image.digest import validate_digest

DEFAULT_REGISTRY = "docker.io"
#: where docker.io is really served from.
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A fully qualified reference: registry host, repository path, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def endpoint_host(self) -> str:
        """The host:port that serves this registry (docker.io is served elsewhere)."""
        if self.registry == DEFAULT_REGISTRY:
            return DOCKER_HUB_ENDPOINT
        return self.registry

    @property
    def object(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """The short form Docker shows (``busybox:latest``)."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository
            if name.startswith("library/") and name.count("/") == 1:
                name = name[len("library/") :]
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name


def _split_domain(name: str) -> tuple[str, str]:
    head, sep, rest = name.partition("/")
    # Docker's rule: the first component is a registry only when it looks like a host.
    if not sep or (
        not any(c in head for c in ".:") and head != "localhost" and head.lower() == head
    ):
        return DEFAULT_REGISTRY, name
    return head, rest


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``; raise InvalidArgument naming it when it is not valid."""
    if not text or text != text.strip():
        raise InvalidArgument(f"invalid reference {text!r}: empty or surrounded by spaces")
    if _HEX64.match(text):
        raise InvalidArgument(
            f"invalid reference {text!r}: a 64-character hex string is an image id, not a name"
        )
    remainder = text
    digest: str | None = None
    if "@" in remainder:
        remainder, _, digest = remainder.rpartition("@")
        try:
            validate_digest(digest)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid reference {text!r}: {exc}") from None
    tag: str | None = None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidArgument(f"invalid reference {text!r}: bad tag {tag!r}")
    registry, repository = _split_domain(remainder)
    if not _DOMAIN.match(registry):
        raise InvalidArgument(f"invalid reference {text!r}: bad registry host {registry!r}")
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not repository:
        raise InvalidArgument(f"invalid reference {text!r}: no repository name")
    for component in repository.split("/"):
        if not _COMPONENT.match(component):
            raise InvalidArgument(
                f"invalid reference {text!r}: repository component {component!r} must be"
                " lowercase letters, digits and separators"
            )
    if len(f"{registry}/{repository}") > _MAX_NAME:
        raise InvalidArgument(f"invalid reference {text!r}: name longer than {_MAX_NAME}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)
