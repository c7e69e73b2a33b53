"""Registry authentication: anonymous, HTTP basic, and bearer tokens (WWW-Authenticate).

The first 401 from a host teaches us its scheme (and, for bearer, its realm and service); later
requests to the host send credentials at once.  Tokens are cached per host and scope until shortly
before they expire, shared by all threads, and fetched again when expired or refused.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from kettle.errors import PermissionDenied, Unavailable
from kettle.image.credentials import Credential, CredentialStore
from kettle.image.transport import Transport

#: tokens are renewed this long before they expire.
_SLACK = 10.0
_MIN_EXPIRY = 60.0


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict, hash=False)


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``Bearer realm="...",service="..." , Basic realm="..."`` (RFC 7235)."""
    out: list[Challenge] = []
    i, n = 0, len(header)
    current: Challenge | None = None
    while i < n:
        while i < n and header[i] in " ,\t":
            i += 1
        start = i
        while i < n and header[i] not in " =,\t":
            i += 1
        token = header[start:i]
        if not token:
            break
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and current is not None:
            i = j + 1
            while i < n and header[i] in " \t":
                i += 1
            if i < n and header[i] == '"':
                i += 1
                value = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    value.append(header[i])
                    i += 1
                i += 1
                current.params[token.lower()] = "".join(value)
            else:
                start = i
                while i < n and header[i] not in ",":
                    i += 1
                current.params[token.lower()] = header[start:i].strip()
        else:
            current = Challenge(token.lower(), {})
            out.append(current)
            i = j
    return out


@dataclass
class _HostAuth:
    scheme: str
    realm: str = ""
    service: str = ""


class Authorizer:
    def __init__(self, transport: Transport, credentials: CredentialStore | None = None) -> None:
        self.transport = transport
        self.credentials = credentials
        self._hosts: dict[str, _HostAuth] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._creds: dict[str, Credential | None] = {}

    def _credential(self, registry: str) -> Credential | None:
        if self.credentials is None:
            return None
        with self._lock:
            if registry not in self._creds:
                self._creds[registry] = self.credentials.get(registry)
            return self._creds[registry]

    def header(self, registry: str, host: str, scope: str) -> str | None:
        """The Authorization value to send, if this host asked for one before."""
        with self._lock:
            ha = self._hosts.get(host)
            if ha is None:
                return None
            if ha.scheme == "bearer":
                tok = self._tokens.get((host, scope))
                if tok and tok[1] - _SLACK > time.monotonic():
                    return f"Bearer {tok[0]}"
        if ha.scheme == "basic":
            cred = self._credential(registry)
            return _basic(cred) if cred and cred.username else None
        if ha.scheme == "bearer":
            return f"Bearer {self._fetch_token(registry, host, ha, scope)}"
        return None

    def challenge(self, registry: str, host: str, header: str, scope: str, sent: str | None) -> str:
        """Answer a 401: the Authorization value to retry with, or PermissionDenied."""
        challenges = parse_challenges(header)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            realm = bearer.params.get("realm", "")
            if not realm:
                raise PermissionDenied(f"registry {host}: bearer challenge without a realm")
            ha = _HostAuth("bearer", realm, bearer.params.get("service", ""))
            with self._lock:
                self._hosts[host] = ha
                if sent is not None:
                    self._tokens.pop((host, scope), None)
            extra = bearer.params.get("scope", "")
            want = scope if not extra or extra == scope else f"{scope} {extra}"
            token = self._fetch_token(registry, host, ha, want)
            value = f"Bearer {token}"
            if value == sent:
                raise PermissionDenied(f"registry {host}: access denied for {scope}")
            return value
        if basic is not None:
            with self._lock:
                self._hosts[host] = _HostAuth("basic")
            cred = self._credential(registry)
            if cred is None or not cred.username:
                raise PermissionDenied(f"registry {host}: authentication required, no credentials")
            value = _basic(cred)
            if value == sent:
                raise PermissionDenied(
                    f"registry {host}: credentials for {cred.username!r} refused"
                )
            return value
        raise PermissionDenied(f"registry {host}: unsupported authentication challenge {header!r}")

    def _fetch_token(self, registry: str, host: str, ha: _HostAuth, scope: str) -> str:
        # One fetch at a time: parallel layer threads would otherwise each ask for a token.
        with self._fetch_lock:
            with self._lock:
                tok = self._tokens.get((host, scope))
                if tok and tok[1] - _SLACK > time.monotonic():
                    return tok[0]
            cred = self._credential(registry)
            token, expires = self._request_token(host, ha, scope, cred)
            with self._lock:
                self._tokens[(host, scope)] = (token, time.monotonic() + expires)
            return token

    def _request_token(
        self, host: str, ha: _HostAuth, scope: str, cred: Credential | None
    ) -> tuple[str, float]:
        scopes = [s for s in scope.split(" ") if s]
        if cred is not None and cred.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": cred.identity_token,
                "service": ha.service,
                "client_id": "kettle",
                "scope": " ".join(scopes),
            }
            resp = self.transport.request(
                "POST",
                ha.realm,
                {"Content-Type": "application/x-www-form-urlencoded"},
                urllib.parse.urlencode(form).encode(),
                what=f"token for {host}",
            )
        else:
            query = [("service", ha.service)] if ha.service else []
            query += [("scope", s) for s in scopes]
            sep = "&" if "?" in ha.realm else "?"
            url = ha.realm + (sep + urllib.parse.urlencode(query) if query else "")
            headers = {}
            if cred is not None and cred.username:
                headers["Authorization"] = _basic(cred)
            resp = self.transport.request("GET", url, headers, what=f"token for {host}")
        body = resp.read(1 << 20)
        if resp.status in (401, 403):
            raise PermissionDenied(
                f"registry {host}: token server {ha.realm} refused ({resp.status})"
            )
        if resp.status != 200:
            raise Unavailable(f"registry {host}: token server {ha.realm} answered {resp.status}")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            expires = float(doc.get("expires_in") or _MIN_EXPIRY)
        except (ValueError, AttributeError, TypeError):
            raise Unavailable(f"registry {host}: token server {ha.realm} sent no token") from None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"registry {host}: token server {ha.realm} sent no token")
        return token, max(expires, _MIN_EXPIRY)


def _basic(cred: Credential) -> str:
    raw = f"{cred.username}:{cred.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()
