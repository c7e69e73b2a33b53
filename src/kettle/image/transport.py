"""HTTP for registries, on the standard library's http.client.

Why http.client rather than httpx: one thread per layer download is all the concurrency a pull
needs, http.client reads a body straight into our buffer (readinto on the socket) and costs no
import time, while httpx adds ~145 ms of imports and a pure-Python HTTP parser in the hot path.

This layer does keep-alive pooling, redirects (dropping credentials when the host changes, as
blob storage redirects need), and retries with exponential back-off for connection failures,
429 and 5xx answers.  Authentication is the registry client's business.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping

from kettle.errors import InvalidArgument, Unavailable
from kettle.image.hosts import RegistryHosts

USER_AGENT = "kettle/0.1"
MAX_REDIRECTS = 5
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NET_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError)

Sleep = Callable[[float], None]


class Response:
    """An HTTP response whose body is read by the caller; the connection is pooled when done."""

    def __init__(
        self,
        transport: Transport,
        key: tuple[str, str],
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        url: str,
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self._resp = resp
        self.url = url
        self.status = resp.status
        self.headers = resp.headers

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""

    def read(self, limit: int = 4 << 20) -> bytes:
        """The whole body (at most ``limit`` bytes), then the connection goes back to the pool."""
        length = self._resp.length
        if length is not None and length > limit:
            self.close(reuse=False)
            raise InvalidArgument(f"{self.url}: response of {length} bytes exceeds {limit}")
        try:
            data = self._resp.read(limit + 1)
        except _NET_ERRORS as exc:
            self.close(reuse=False)
            raise Unavailable(f"{self.url}: {_describe(exc)}") from None
        if len(data) > limit:
            self.close(reuse=False)
            raise InvalidArgument(f"{self.url}: response exceeds {limit} bytes")
        self.close()
        return data

    def readinto(self, buf: memoryview) -> int:
        """Raw body bytes; raises the network error as is (the blob reader resumes on it)."""
        n = self._resp.readinto(buf)
        return n or 0

    def close(self, reuse: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if reuse and self._resp.isclosed() and not self._resp.will_close:
            self._transport._release(self._key, conn)
        else:
            self._resp.close()
            conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} more bytes"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed by the server"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls certificate not trusted ({exc.verify_message})"
    text = str(exc) or type(exc).__name__
    return text.lower() if text else type(exc).__name__


class Transport:
    def __init__(
        self,
        hosts: RegistryHosts | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.2,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.hosts = hosts or RegistryHosts()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self._pool: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def url(self, host: str, path: str) -> str:
        return f"{self.hosts.scheme(host)}://{host}{path}"

    def delay(self, attempt: int, retry_after: str = "") -> float:
        if retry_after.isdigit():
            return min(float(retry_after), 30.0)
        return float(min(self.backoff * (2.0**attempt), 8.0))

    def _connect(self, key: tuple[str, str]) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._pool.get(key)
            if idle:
                return idle.pop()
        return self._new(key)

    def _release(self, key: tuple[str, str], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._pool.setdefault(key, [])
            if len(idle) < 8:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pools, self._pool = self._pool, {}
        for conns in pools.values():
            for c in conns:
                c.close()

    def _once(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"unsupported url {url!r}")
        key = (parts.scheme, parts.netloc)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        hdrs = {"User-Agent": USER_AGENT, **headers}
        for fresh in (False, True):
            conn = self._connect(key) if not fresh else self._new(key)
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if fresh:
                    raise
                continue  # an idle pooled connection the server had closed: once more, new
            except BaseException:
                conn.close()
                raise
            return Response(self, key, conn, resp, url)
        raise AssertionError("unreachable")

    def _new(self, key: tuple[str, str]) -> http.client.HTTPConnection:
        scheme, netloc = key
        if scheme == "https":
            return http.client.HTTPSConnection(
                netloc, timeout=self.timeout, context=self.hosts.ssl_context(netloc)
            )
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        *,
        what: str = "",
    ) -> Response:
        """Send with retries and redirects; a non-retryable status is returned to the caller."""
        headers = dict(headers or {})
        what = what or f"{method} {url}"
        attempt = 0
        redirects = 0
        while True:
            try:
                resp = self._once(method, url, headers, body)
            except _NET_ERRORS as exc:
                if attempt >= self.retries:
                    raise Unavailable(
                        f"{what}: {_describe(exc)} (after {attempt + 1} attempts)"
                    ) from None
                self.sleep(self.delay(attempt))
                attempt += 1
                continue
            if resp.status in _REDIRECTS:
                location = resp.header("Location")
                resp.close(reuse=False)
                if not location or redirects >= MAX_REDIRECTS:
                    raise Unavailable(f"{what}: too many or empty redirects")
                redirects += 1
                new = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(new).netloc != urllib.parse.urlsplit(url).netloc:
                    # Never hand registry credentials to the storage host a redirect names.
                    headers.pop("Authorization", None)
                if resp.status == 303:
                    method, body = "GET", None
                url = new
                continue
            if resp.status in _RETRY_STATUS and attempt < self.retries:
                retry_after = resp.header("Retry-After")
                resp.close(reuse=False)
                self.sleep(self.delay(attempt, retry_after))
                attempt += 1
                continue
            return resp
