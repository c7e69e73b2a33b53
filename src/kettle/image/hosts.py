"""Per-registry connection settings: HTTPS with per-host CA directories, or plain HTTP.

CA and client certificates are found like Docker and containerd do: in
``<certs dir>/<host:port>/`` every ``*.crt`` is a CA, every ``*.cert`` with its ``*.key`` a client
certificate.  Plain HTTP is used only for the hosts listed explicitly.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Iterable, Sequence

from kettle.errors import InvalidArgument

DEFAULT_CERTS_DIRS = ("/etc/kettle/certs.d", "/etc/docker/certs.d", "/etc/containerd/certs.d")


class RegistryHosts:
    def __init__(
        self,
        plain_http: Iterable[str] = (),
        certs_dirs: Sequence[str] = DEFAULT_CERTS_DIRS,
    ) -> None:
        self.plain_http = frozenset(plain_http)
        self.certs_dirs = tuple(certs_dirs)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def scheme(self, host: str) -> str:
        return "http" if host in self.plain_http else "https"

    def ssl_context(self, host: str) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is None:
                ctx = self._make_context(host)
                self._contexts[host] = ctx
            return ctx

    def _make_context(self, host: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        for base in self.certs_dirs:
            d = os.path.join(base, host)
            if not os.path.isdir(d):
                continue
            names = sorted(os.listdir(d))
            for name in names:
                path = os.path.join(d, name)
                if name.endswith(".crt"):
                    try:
                        ctx.load_verify_locations(cafile=path)
                    except (ssl.SSLError, OSError) as exc:
                        raise InvalidArgument(
                            f"registry {host}: bad CA file {path}: {exc}"
                        ) from None
                elif name.endswith(".cert"):
                    key = path[: -len(".cert")] + ".key"
                    if not os.path.exists(key):
                        raise InvalidArgument(
                            f"registry {host}: client certificate {path} has no {key}"
                        )
                    try:
                        ctx.load_cert_chain(path, key)
                    except (ssl.SSLError, OSError) as exc:
                        raise InvalidArgument(
                            f"registry {host}: bad client certificate {path}: {exc}"
                        ) from None
        return ctx
