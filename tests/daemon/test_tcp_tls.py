"""kettled on TCP, only with mutual TLS: a client without a certificate signed by the
configured CA is refused; the unix socket goes on working beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.daemon.conftest import Image, Kettled
from tests.image.oci_fixture import free_port

pytestmark = pytest.mark.privileged


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger CA."""
    d.mkdir()
    f = {n: d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.pem", "cli.key", "cli.pem",
                            "evil.key", "evil.pem", "evilcli.key", "evilcli.pem")}  # fmt: skip
    for ca in ("ca", "evil"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN={ca}-ca", "-keyout", str(f[f"{ca}.key"]),
                 "-out", str(f[f"{ca}.pem"]))  # fmt: skip
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ca, extra in (("srv", "ca", ["-extfile", str(ext)]), ("cli", "ca", []),
                            ("evilcli", "evil", [])):  # fmt: skip
        csr = d / f"{name}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(f[f"{name}.key"]), "-out", str(csr))  # fmt: skip
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(f[f"{ca}.pem"]),
                 "-CAkey", str(f[f"{ca}.key"]), "-CAcreateserial", "-days", "2",
                 "-out", str(f[f"{name}.pem"]), *extra)  # fmt: skip
    return f


def test_tcp_needs_mutual_tls(daemon_tmp: Path, image: Image, tmp_path: Path) -> None:
    pki = _pki(tmp_path / "pki")
    port = free_port()
    k = Kettled(daemon_tmp / f"tcp-{port}", image.registry)
    with k.config.open("a") as cfg:
        cfg.write(
            f'[tcp]\naddress = "127.0.0.1:{port}"\ntls_cert = "{pki["srv.pem"]}"\n'
            f'tls_key = "{pki["srv.key"]}"\ntls_ca = "{pki["ca.pem"]}"\n'
        )
    try:
        k.start()
        tcp = ["--address", f"tcp://127.0.0.1:{port}"]
        good = ["--tlscacert", str(pki["ca.pem"]), "--tlscert", str(pki["cli.pem"]),
                "--tlskey", str(pki["cli.key"])]  # fmt: skip
        res = k.kctl(*tcp, *good, "version", "--format", "json")
        assert res.returncode == 0, res.stderr
        assert '"api": "v1"' in res.stdout
        assert k.kctl(*tcp, *good, "ps", "-a").returncode == 0
        # A certificate from another CA is refused by kettled.
        evil = ["--tlscacert", str(pki["ca.pem"]), "--tlscert", str(pki["evilcli.pem"]),
                "--tlskey", str(pki["evilcli.key"])]  # fmt: skip
        res = k.kctl(*tcp, *evil, "ps")
        assert res.returncode != 0 and res.stderr.startswith("kctl: "), res.stderr
        # No client certificate at all: kctl says what is missing.
        missing = ["--tlscacert", str(pki["ca.pem"]), "--tlscert", str(tmp_path / "none.pem")]
        res = k.kctl(*tcp, *missing, "ps")
        assert res.returncode != 0 and "--tlscert" in res.stderr, res.stderr
        # The unix socket works beside the TCP listener.
        assert k.kctl("version").returncode == 0
    finally:
        leaks = k.cleanup()
    assert not leaks


def test_tcp_without_tls_is_refused(daemon_tmp: Path, image: Image) -> None:
    k = Kettled(daemon_tmp / f"notls-{free_port()}", image.registry)
    with k.config.open("a") as cfg:
        cfg.write('[tcp]\naddress = "127.0.0.1:1"\n')
    with pytest.raises(RuntimeError, match="mutual TLS"):
        k.start()
    k.cleanup()


def test_configured_runtime_runs_the_containers(daemon_tmp: Path, image: Image) -> None:
    """`runtime = "/usr/sbin/runc"` in kettled.toml: the shims run containers with runc."""
    import json
    import shutil

    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed")
    k = Kettled(daemon_tmp / f"runc-{free_port()}", image.registry)
    text = k.config.read_text()
    k.config.write_text(f'runtime = "{runc}"\n' + text)
    try:
        k.start()
        k.ok("pull", "-q", image.ref)
        res = k.kctl("run", "--rm", image.ref, "echo", "by runc")
        assert (res.returncode, res.stdout) == (0, "by runc\n"), res.stderr
        cid = k.ok("run", "-d", image.ref, "sleep", "1000").strip()
        root = f"/run/containerd/runc/{k.namespace}"
        listed = subprocess.run([runc, "--root", root, "list", "--format", "json"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert cid in [c["id"] for c in json.loads(listed) or []]
        k.ok("rm", "-f", cid)
    finally:
        leaks = k.cleanup()
        shutil.rmtree(f"/run/containerd/runc/{k.namespace}", ignore_errors=True)
    assert not leaks
