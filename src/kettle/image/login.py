"""Logging in to a registry: the credentials are checked with an authenticated ping of /v2/.

The ping answers the way a pull would be answered: 200 needs no authentication, 401 names the
scheme (Basic, or Bearer with a token realm).  The credentials are offered to that scheme and
the ping repeated; only a 200 then counts as a login.
"""

from __future__ import annotations

import re

from kettle.errors import InvalidArgument, PermissionDenied, Unavailable
from kettle.image.auth import Authorizer
from kettle.image.credentials import Credential, CredentialStore
from kettle.image.reference import DEFAULT_REGISTRY, DOCKER_HUB_ENDPOINT
from kettle.image.transport import Transport

_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HOST = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")


def registry_of(server: str) -> tuple[str, str]:
    """(registry name credentials are kept under, host:port to talk to) for a login server
    written as Docker accepts it: ``host[:port]``, a URL (``https://host/v1/``) or docker.io."""
    text = server.strip()
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme not in ("http", "https"):
            raise InvalidArgument(f"login server {server!r}: scheme {scheme!r} is not http(s)")
    host = text.split("/", 1)[0]
    if not host or not _HOST.match(host):
        raise InvalidArgument(f"login server {server!r}: not a registry host[:port]")
    if host.lower() in _HUB_ALIASES:
        return DEFAULT_REGISTRY, DOCKER_HUB_ENDPOINT
    return host, host


class _Given(CredentialStore):
    """A credential store holding just the credentials being checked."""

    def __init__(self, cred: Credential) -> None:
        self._cred = cred

    def get(self, registry: str) -> Credential | None:
        return self._cred


def verify(transport: Transport, registry: str, endpoint: str, cred: Credential) -> None:
    """Raise PermissionDenied unless the registry accepts ``cred`` (or asks for nothing)."""
    what = f"login to {registry}"
    if not cred.username:
        raise InvalidArgument(f"{what}: a username is needed")
    url = transport.url(endpoint, "/v2/")
    resp = transport.request("GET", url, what=what)
    status, challenge = resp.status, resp.header("WWW-Authenticate")
    resp.close(reuse=False)
    if status == 200:
        return  # nothing to check: the registry serves everyone, as Docker also accepts
    _unexpected(status, what, url)
    if not challenge:
        raise PermissionDenied(f"{what}: unauthorized (401) without a challenge")
    auth = Authorizer(transport, _Given(cred))
    try:
        value = auth.challenge(registry, endpoint, challenge, "", None)
    except PermissionDenied as exc:
        raise PermissionDenied(f"{what}: username or password refused ({exc})") from None
    resp = transport.request("GET", url, {"Authorization": value}, what=what)
    status = resp.status
    resp.close(reuse=False)
    if status in (401, 403):
        raise PermissionDenied(f"{what}: username or password refused")
    if status != 200:
        _unexpected(status, what, url)


def _unexpected(status: int, what: str, url: str) -> None:
    if status == 401:
        return
    if status == 404:
        raise Unavailable(f"{what}: {url} is not a registry (404)")
    raise Unavailable(f"{what}: registry answered {status}")
