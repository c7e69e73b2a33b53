"""The registry client against a small stub server: redirects, retries, Range resume, bearer.

The stub is ours (not a real registry) so that it can misbehave on purpose; the real-registry
flows are in test_pull.py.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kettle.errors import InvalidArgument, PermissionDenied, Unavailable
from kettle.image.auth import Authorizer
from kettle.image.credentials import CredentialStore
from kettle.image.hosts import RegistryHosts
from kettle.image.reference import parse_reference
from kettle.image.registry import RegistryClient
from kettle.image.transport import Transport

BLOB = os.urandom(300_000)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Stub:
    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self.routes: dict[str, Handler] = {}
        stub = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                stub.log.append({"path": self.path, "headers": dict(self.headers)})
                handler = stub.routes.get(path)
                if handler is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                handler(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(
    h: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str
) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def stubs() -> Iterator[tuple[Stub, Stub]]:
    a, b = Stub(), Stub()
    yield a, b
    a.close()
    b.close()


def client(tmp_path, *hosts: str, user: str = "") -> RegistryClient:
    t = Transport(RegistryHosts(plain_http=hosts, certs_dirs=()), retries=3, backoff=0.01)
    creds = CredentialStore(str(tmp_path / "auth.json"), str(tmp_path / "none.json"))
    if user:
        creds.save(hosts[0], user, "pw")
    return RegistryClient(t, Authorizer(t, creds))


def test_redirect_drops_credentials(stubs: tuple[Stub, Stub], tmp_path) -> None:
    reg, storage = stubs
    path = f"/v2/a/blobs/{DIGEST}"

    def challenge_or_redirect(h: http.server.BaseHTTPRequestHandler) -> None:
        if "Authorization" not in h.headers:
            reply(h, 401, WWW_Authenticate='Basic realm="r"')
        else:
            reply(h, 307, Location=f"http://{storage.host}/bucket/blob?sig=1")

    reg.routes[path] = challenge_or_redirect
    storage.routes["/bucket/blob"] = lambda h: reply(h, 200, BLOB)
    c = client(tmp_path, reg.host, user="me")
    ref = parse_reference(f"{reg.host}/a:t")
    assert c.get_blob(ref, DIGEST, len(BLOB), limit=1 << 20) == BLOB
    assert reg.log[-1]["headers"]["Authorization"].startswith("Basic ")
    assert "Authorization" not in storage.log[-1]["headers"]


def test_retries_5xx_then_succeeds(stubs: tuple[Stub, Stub], tmp_path) -> None:
    reg, _ = stubs
    calls = []

    def flaky(h: http.server.BaseHTTPRequestHandler) -> None:
        calls.append(1)
        if len(calls) < 3:
            reply(h, 503)
        else:
            reply(h, 200, BLOB)

    reg.routes[f"/v2/a/blobs/{DIGEST}"] = flaky
    c = client(tmp_path, reg.host)
    assert c.get_blob(parse_reference(f"{reg.host}/a"), DIGEST, len(BLOB), limit=1 << 20) == BLOB
    assert len(calls) == 3


def test_gives_up_with_clear_error(stubs: tuple[Stub, Stub], tmp_path) -> None:
    reg, _ = stubs
    reg.routes[f"/v2/a/blobs/{DIGEST}"] = lambda h: reply(h, 503)
    c = client(tmp_path, reg.host)
    with pytest.raises(Unavailable, match=f"blob {DIGEST} of {reg.host}/a: registry answered 503"):
        c.get_blob(parse_reference(f"{reg.host}/a"), DIGEST, len(BLOB), limit=1 << 20)


def test_dropped_body_resumes_with_range(stubs: tuple[Stub, Stub], tmp_path) -> None:
    reg, _ = stubs
    ranges: list[str] = []

    def dropping(h: http.server.BaseHTTPRequestHandler) -> None:
        rng = h.headers.get("Range", "")
        ranges.append(rng)
        if not rng:
            # Promise everything, send a third, hang up.
            h.send_response(200)
            h.send_header("Content-Length", str(len(BLOB)))
            h.end_headers()
            h.wfile.write(BLOB[:100_000])
            h.wfile.flush()
            h.close_connection = True
            return
        start = int(rng.split("=")[1].rstrip("-"))
        reply(h, 206, BLOB[start:], Content_Range=f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")

    reg.routes[f"/v2/a/blobs/{DIGEST}"] = dropping
    c = client(tmp_path, reg.host)
    stream = c.open_blob(parse_reference(f"{reg.host}/a"), DIGEST, len(BLOB))
    out = bytearray()
    buf = memoryview(bytearray(65536))
    while n := stream.readinto(buf):
        out += buf[:n]
    assert bytes(out) == BLOB
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and stream.resumes == 1


def test_bearer_token_flow_with_stub(stubs: tuple[Stub, Stub], tmp_path) -> None:
    reg, auth = stubs
    tokens: list[str] = []

    def token(h: http.server.BaseHTTPRequestHandler) -> None:
        tokens.append(h.path)
        reply(h, 200, json.dumps({"token": f"t{len(tokens)}", "expires_in": 300}).encode())

    def manifest(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != "Bearer t1":
            realm = f'Bearer realm="http://{auth.host}/token",service="stub"'
            reply(h, 401, WWW_Authenticate=realm)
            return
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [],
            }
        )
        reply(h, 200, body.encode(), Content_Type="application/vnd.oci.image.index.v1+json")

    auth.routes["/token"] = token
    reg.routes["/v2/lib/app/manifests/v1"] = manifest
    c = client(tmp_path, reg.host, auth.host)
    ref = parse_reference(f"{reg.host}/lib/app:v1")
    c.get_manifest(ref, "v1")
    c.get_manifest(ref, "v1")
    assert tokens == ["/token?service=stub&scope=repository%3Alib%2Fapp%3Apull"]


def test_denied_and_bad_manifest_digest(stubs: tuple[Stub, Stub], tmp_path) -> None:
    reg, _ = stubs
    reg.routes["/v2/x/manifests/v1"] = lambda h: reply(h, 401, WWW_Authenticate='Basic realm="r"')
    c = client(tmp_path, reg.host)
    with pytest.raises(PermissionDenied, match="no credentials"):
        c.get_manifest(parse_reference(f"{reg.host}/x:v1"), "v1")
    body = b'{"schemaVersion": 2, "manifests": []}'
    wrong = "sha256:" + "0" * 64
    reg.routes[f"/v2/y/manifests/{wrong}"] = lambda h: reply(h, 200, body)
    with pytest.raises(InvalidArgument, match="content has digest"):
        c.get_manifest(parse_reference(f"{reg.host}/y@{wrong}"), wrong)
