"""A client of the OCI distribution API: manifests, and blobs as resumable streams."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Mapping

from kettle.errors import (
    InvalidArgument,
    KettleError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from kettle.image import mediatypes as mt
from kettle.image.auth import Authorizer
from kettle.image.digest import hasher, validate_digest
from kettle.image.manifest import MAX_MANIFEST_SIZE, detect_media_type
from kettle.image.reference import Reference
from kettle.image.transport import Response, Transport, _describe

_NET_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError, socket.timeout)


class RegistryClient:
    def __init__(self, transport: Transport, authorizer: Authorizer) -> None:
        self.transport = transport
        self.auth = authorizer

    def request(
        self,
        ref: Reference,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        what: str,
    ) -> Response:
        """A request to the registry of ``ref`` with authentication; 401s are answered."""
        host = ref.endpoint_host
        scope = f"repository:{ref.repository}:pull"
        url = self.transport.url(host, f"/v2/{ref.repository}/{path}")
        hdrs = dict(headers or {})
        value = self.auth.header(ref.registry, host, scope)
        for _ in range(3):
            if value:
                hdrs["Authorization"] = value
            resp = self.transport.request(method, url, hdrs, what=what)
            if resp.status != 401:
                return resp
            challenge = resp.header("WWW-Authenticate")
            resp.close(reuse=False)
            if not challenge:
                raise PermissionDenied(f"{what}: unauthorized (401) without a challenge")
            value = self.auth.challenge(ref.registry, host, challenge, scope, value)
        raise PermissionDenied(f"{what}: access denied (401)")

    def _check(self, resp: Response, what: str, ok: tuple[int, ...] = (200,)) -> None:
        if resp.status in ok:
            return
        detail = ""
        try:
            detail = resp.read(64 << 10).decode(errors="replace").strip()[:200]
        except KettleError:
            pass
        resp.close(reuse=False)
        if resp.status == 404:
            raise NotFound(f"{what}: not found")
        if resp.status == 403:
            raise PermissionDenied(f"{what}: access denied (403)")
        if resp.status == 401:
            raise PermissionDenied(f"{what}: unauthorized (401)")
        raise Unavailable(f"{what}: registry answered {resp.status} {detail}".rstrip())

    def get_manifest(self, ref: Reference, obj: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of the manifest ``obj`` (a tag or digest), verified."""
        what = f"manifest {ref.name}:{obj}" if ":" not in obj else f"manifest {ref.name}@{obj}"
        resp = self.request(
            ref, "GET", f"manifests/{obj}", {"Accept": mt.MANIFEST_ACCEPT}, what=what
        )
        self._check(resp, what)
        body = resp.read(MAX_MANIFEST_SIZE)
        media_type = detect_media_type(body, resp.header("Content-Type"), what)
        if obj.startswith("sha") and ":" in obj:
            digest = obj
        else:
            digest = resp.header("Docker-Content-Digest") or ""
            if not digest:
                h = hasher("sha256:" + "0" * 64)
                h.update(body)
                digest = "sha256:" + h.hexdigest()
        h = hasher(digest)
        h.update(body)
        got = f"{digest.split(':')[0]}:{h.hexdigest()}"
        if got != digest:
            raise InvalidArgument(f"{what}: content has digest {got}, expected {digest}")
        return body, media_type, digest

    def get_blob(
        self, ref: Reference, digest: str, size: int, limit: int = MAX_MANIFEST_SIZE
    ) -> bytes:
        """A small blob (config) read whole and verified."""
        what = f"blob {digest} of {ref.name}"
        if size > limit:
            raise InvalidArgument(f"{what}: {size} bytes exceeds {limit}")
        resp = self.request(ref, "GET", f"blobs/{digest}", what=what)
        self._check(resp, what)
        body = resp.read(limit)
        h = hasher(digest)
        h.update(body)
        got = f"{digest.split(':')[0]}:{h.hexdigest()}"
        if len(body) != size or got != digest:
            raise InvalidArgument(f"{what}: content does not match its digest and size; rejected")
        return body

    def open_blob(self, ref: Reference, digest: str, size: int, offset: int = 0) -> BlobStream:
        validate_digest(digest)
        return BlobStream(self, ref, digest, size, offset)


class BlobStream:
    """A blob's bytes from ``offset``; a dropped connection is resumed with a Range request."""

    def __init__(
        self, client: RegistryClient, ref: Reference, digest: str, size: int, offset: int
    ) -> None:
        self.client = client
        self.ref = ref
        self.digest = digest
        self.size = size
        self.offset = offset
        self.what = f"blob {digest} of {ref.name}"
        self._resp: Response | None = None
        self.resumes = 0
        self.requests = 0

    def _open(self) -> Response:
        headers = {}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        self.requests += 1
        resp = self.client.request(self.ref, "GET", f"blobs/{self.digest}", headers, what=self.what)
        self.client._check(resp, self.what, (200, 206))
        if self.offset and resp.status == 200:
            # The server ignored Range: skip what we already have.
            skip = self.offset
            buf = memoryview(bytearray(min(skip, 1 << 20)))
            while skip:
                n = resp.readinto(buf[: min(skip, len(buf))])
                if not n:
                    raise Unavailable(f"{self.what}: body ended early")
                skip -= n
        return resp

    def readinto(self, buf: memoryview) -> int:
        """Fill part of buf; 0 only at the end of the blob."""
        if self.offset >= self.size:
            return 0
        transport = self.client.transport
        attempt = 0
        while True:
            try:
                if self._resp is None:
                    self._resp = self._open()
                want = min(len(buf), self.size - self.offset)
                n = self._resp.readinto(buf[:want])
                if n == 0:
                    raise http.client.IncompleteRead(b"", self.size - self.offset)
                self.offset += n
                if self.offset >= self.size:
                    self.close()
                return n
            except _NET_ERRORS as exc:
                self._drop()
                if attempt >= transport.retries:
                    raise Unavailable(
                        f"{self.what}: {_describe(exc)} at byte {self.offset} of {self.size}"
                        f" (after {attempt + 1} attempts)"
                    ) from None
                transport.sleep(transport.delay(attempt))
                attempt += 1
                self.resumes += 1
            except Unavailable:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close(reuse=False)
            self._resp = None

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
