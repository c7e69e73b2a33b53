"""Pulls from a real docker-registry on 127.0.0.1, checked against umoci's unpack."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from oci_fixture import (
    PASSWORD,
    USER,
    E,
    Layout,
    Registry,
    TokenServer,
    file_digest,
    layer_tar,
    tmpfs,
)

from kettle.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from kettle.image import CredentialStore, ImageService, PullEvent, PullStats, RegistryOptions
from kettle.snapshot.apply import ApplyLimits
from kettle.snapshot.mounts import mount_all, unmount

pytestmark = pytest.mark.privileged


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (device nodes, ownership, overlay mounts)")


def service(root: str, *hosts: str, driver: str = "auto", **kw: Any) -> ImageService:
    creds = kw.pop("credentials", None) or CredentialStore(
        os.path.join(root, "no-auth.json"), os.path.join(root, "no-docker.json")
    )
    opts = RegistryOptions(plain_http=hosts, **kw)
    limits = ApplyLimits(free_space_margin=0)
    return ImageService(
        root, registry=opts, credentials=creds, limits=limits, snapshot_driver=driver
    )


@pytest.fixture
def store(tmp_path) -> Iterator[str]:
    d = str(tmp_path / "store")
    yield d


def tree_meta(root: str) -> dict[str, tuple[Any, ...]]:
    """Type, mode, owner, content, link target, device, user xattrs, non-dir mtime of a tree."""
    out: dict[str, tuple[Any, ...]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            fmt = stat.S_IFMT(st.st_mode)
            content = ""
            if stat.S_ISREG(st.st_mode):
                content = file_digest(p)
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
            rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                for x in os.listxattr(p, follow_symlinks=False):
                    if x.startswith("user."):
                        xattrs[x] = os.getxattr(p, x, follow_symlinks=False)
            mtime = 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[rel] = (
                fmt, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content, target, rdev,
                tuple(sorted(xattrs.items())), mtime,
            )  # fmt: skip
    out["<hardlinks>"] = tuple(sorted(tuple(sorted(v)) for v in inodes.values() if len(v) > 1))
    return out


def umoci_rootfs(layout: str, tag: str, dest: str) -> str:
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed")
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", dest], check=True, capture_output=True
    )
    return os.path.join(dest, "rootfs")


@contextlib.contextmanager
def mounted(svc: ImageService, ref: str, key: str) -> Iterator[str]:
    mounts = svc.prepare_rootfs(ref, key)
    target = tempfile.mkdtemp(prefix="kettle-rootfs-")
    mount_all(mounts, target)
    try:
        yield target
    finally:
        unmount(target)
        os.rmdir(target)
        svc.remove_rootfs(key)


# --- pull and compare -----------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["busybox", "rich", "rich-zstd", "rich-plain"])
@pytest.mark.parametrize("driver", ["overlay", "copy"])
def test_rootfs_matches_umoci(
    registry: Registry, layouts: dict[str, Any], store: str, tmp_path, tag: str, driver: str
) -> None:
    if tag not in layouts:
        pytest.skip("zstandard is not installed")
    # umoci 0.4 reads no zstd: the zstd image has the gzip image's layers, so compare to that.
    source = "rich" if tag == "rich-zstd" else tag
    expected = tree_meta(umoci_rootfs(layouts["path"], source, str(tmp_path / "umoci")))
    with service(store, registry.host, driver=driver) as svc:
        ref = f"{registry.host}/test/img:{tag}"
        rec = svc.pull(ref)
        assert rec.target == layouts[tag]["digest"]
        with mounted(svc, ref, "ctr1") as root:
            got = tree_meta(root)
        assert svc.verify() == []
    assert got == expected


def test_busybox_runs_from_rootfs(registry: Registry, store: str) -> None:
    with service(store, registry.host) as svc:
        ref = f"{registry.host}/test/img:busybox"
        svc.pull(ref)
        with mounted(svc, ref, "run") as root:
            out = subprocess.run(
                ["chroot", root, "/bin/sh", "-c", "echo hi from $(ls /etc | head -1)"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
    assert out.stdout.strip() == "hi from group"


def test_image_config_and_listing(registry: Registry, store: str) -> None:
    with service(store, registry.host) as svc:
        rec = svc.pull(f"{registry.host}/test/img:rich")
        cfg = svc.config(rec)
        assert cfg.user == "1000:1000"
        assert cfg.env == ("PATH=/usr/bin:/bin", "GREETING=hello")
        assert cfg.working_dir == "/opt/app"
        assert cfg.entrypoint == ("/bin/sh", "-c") and cfg.cmd == ("echo hi",)
        assert cfg.exposed_ports == ("53/udp", "8080/tcp")
        assert cfg.labels == {"org.example.kind": "test"}
        assert cfg.healthcheck is not None and cfg.healthcheck.retries == 3
        assert [r.name for r in svc.list()] == [f"{registry.host}/test/img:rich"]
        assert svc.get(rec.config).name == rec.name  # by image id
        by_digest = svc.pull(f"{registry.host}/test/img@{rec.target}")
        assert by_digest.name.endswith("@" + rec.target)
        # The second pull reused every layer.
        stats = PullStats()
        svc.pull(f"{registry.host}/test/img:rich", stats=stats)
        assert stats.downloaded == 0 and stats.layers_reused == 3


def test_multi_platform_index(registry: Registry, store: str) -> None:
    ref = f"{registry.host}/test/multi:multi"
    with service(store, registry.host) as svc:
        for plat, want in ((None, b"amd64\n"), ("linux/arm64", b"arm64\n")):
            key = f"k-{want.strip().decode()}"
            svc.pull(ref, platform=plat)
            with mounted(svc, ref, key) as root, open(os.path.join(root, "arch"), "rb") as f:
                assert f.read() == want
        with pytest.raises(NotFound) as exc:
            svc.pull(ref, platform="linux/s390x")
        assert "no manifest for platform linux/s390x" in str(exc.value)
        assert "unknown" not in str(exc.value)  # the attestation entry is not offered


def test_missing_image(registry: Registry, store: str) -> None:
    with service(store, registry.host) as svc, pytest.raises(NotFound) as exc:
        svc.pull(f"{registry.host}/test/img:nope")
    assert "test/img:nope" in str(exc.value)


# --- auth and TLS ---------------------------------------------------------------------------


def test_tls_and_basic_auth(tls_registry: Registry, store: str, tmp_path) -> None:
    reg = tls_registry
    certs = os.path.join(os.path.dirname(reg.ca_dir), "certs.d")
    ref = f"{reg.host}/secure/busybox:busybox"
    kfile = str(tmp_path / "auth.json")
    creds = CredentialStore(kfile, str(tmp_path / "none.json"))
    # No CA directory for the host: the certificate is not trusted.
    with (
        service(store, certs_dirs=(), credentials=creds) as svc,
        pytest.raises(Unavailable, match="tls certificate not trusted"),
    ):
        svc.pull(ref)
    with (
        service(store, certs_dirs=(certs,), credentials=creds) as svc,
        pytest.raises(PermissionDenied, match="authentication required"),
    ):
        svc.pull(ref)
    creds.save(reg.host, USER, "wrong")
    with (
        service(store, certs_dirs=(certs,), credentials=creds) as svc,
        pytest.raises(PermissionDenied, match="refused"),
    ):
        svc.pull(ref)
    creds.save(reg.host, USER, PASSWORD)
    assert os.stat(kfile).st_mode & 0o777 == 0o600
    with service(store, certs_dirs=(certs,), credentials=creds) as svc:
        rec = svc.pull(ref)
        assert svc.get(ref) == rec


def test_token_auth(token_registry: tuple[Registry, TokenServer], store: str, tmp_path) -> None:
    reg, ts = token_registry
    ref = f"{reg.host}/tok/rich:rich"
    creds = CredentialStore(str(tmp_path / "auth.json"), str(tmp_path / "none.json"))
    creds.save(reg.host, USER, PASSWORD)
    ts.requests.clear()
    with service(store, reg.host, credentials=creds) as svc:
        svc.pull(ref)
        # One token for the repository, shared by the manifest and all layer threads.
        assert len(ts.requests) == 1
        assert ts.requests[0] == {"scope": ["repository:tok/rich:pull"], "user": USER}
        svc.remove(ref)
        svc.pull(ref)
        assert len(ts.requests) == 1  # reused while valid
        # A token the registry no longer accepts is renewed on the 401.
        svc.client.auth._tokens.clear()
        ts.lifetimes = [-600]
        svc.remove(ref)
        svc.pull(ref)
        assert len(ts.requests) == 3


# --- failures -------------------------------------------------------------------------------


def _big_layout(path: str, size: int) -> dict[str, Any]:
    lay = Layout(path)
    desc = lay.image([layer_tar([E("big", data=os.urandom(size))])], "gzip")
    lay.tag(desc, "big")
    return desc


def test_registry_killed_mid_pull_resumes(spare_registry: Registry, store: str, tmp_path) -> None:
    reg = spare_registry
    desc = _big_layout(str(tmp_path / "layout"), 48 << 20)
    reg.push(str(tmp_path / "layout"), "big", "test/big")
    ref = f"{reg.host}/test/big:big"
    killed = threading.Event()

    def kill_early(ev: PullEvent) -> None:
        if ev.kind == "download" and ev.done >= (4 << 20) and not killed.is_set():
            killed.set()
            reg.kill()

    with service(store, reg.host, retries=2, backoff=0.05) as svc:
        with pytest.raises(Unavailable) as exc:
            svc.pull(ref, progress=kill_early)
        assert "blob sha256:" in str(exc.value) and "connection refused" in str(exc.value)
        assert svc.list() == []
        assert svc.snapshots.list() == []
        reg.start()
        events: list[PullEvent] = []
        stats = PullStats()
        rec = svc.pull(ref, progress=events.append, stats=stats)
        resumed = [e for e in events if e.kind == "resume"]
        assert resumed and resumed[0].done >= 4 << 20
        assert stats.downloaded < (48 << 20) - (4 << 20) + (1 << 20)
        assert rec.target == desc["digest"]
        assert svc.verify() == []


def test_corrupted_blob_rejected(
    spare_registry: Registry, layouts: dict[str, Any], store: str
) -> None:
    reg = spare_registry
    ref = f"{reg.host}/test/img:rich-plain"
    with open(layouts["path"] + f"/blobs/sha256/{layouts['rich-plain']['digest'][7:]}") as f:
        manifest = json.load(f)
    layer = manifest["layers"][0]["digest"]
    path = reg.blob_path(layer)
    with open(path, "r+b") as f:
        f.seek(3000)
        byte = f.read(1)
        f.seek(3000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with service(store, reg.host) as svc:
        with pytest.raises(InvalidArgument) as exc:
            svc.pull(ref)
        assert layer in str(exc.value) and "rejected" in str(exc.value)
        assert svc.list() == []
        assert not svc.content.has(layer)
        # No partial download of the bad blob is kept (other layers' partials may be).
        assert f"sha256-{layer[7:]}" not in os.listdir(os.path.join(store, "content", "ingest"))
        assert all(i.kind == "committed" for i in svc.snapshots.list())
        assert svc.verify() == []


def test_full_disk(registry: Registry, tmp_path) -> None:
    lay_dir = str(tmp_path / "layout")
    lay = Layout(lay_dir)
    # Compresses to almost nothing, unpacks to 24 MiB: the blob fits, the files do not.
    zeros = layer_tar([E(f"z{i}", data=b"\0" * (4 << 20)) for i in range(6)])
    desc = lay.image([zeros], "gzip")
    lay.tag(desc, "zeros")
    registry.push(lay_dir, "zeros", "test/zeros")
    ref = f"{registry.host}/test/zeros:zeros"
    with tmpfs(str(tmp_path / "small"), "16m") as root, service(root, registry.host) as svc:
        with pytest.raises(ResourceExhausted) as exc:
            svc.pull(ref)
        assert "no space left" in str(exc.value)
        assert svc.list() == []
        assert all(i.kind == "committed" for i in svc.snapshots.list())
        assert svc.verify() == []
        svc.gc()
        assert not os.listdir(os.path.join(root, "content", "ingest"))
        # The store still works for an image that fits.
        svc.pull(f"{registry.host}/test/img:busybox")
        assert svc.verify() == []


def test_hostile_image_from_registry(registry: Registry, store: str, tmp_path) -> None:
    lay_dir = str(tmp_path / "layout")
    lay = Layout(lay_dir)
    l1 = layer_tar([E("etc", "dir"), E("escape", "symlink", linkname="/etc")])
    l2 = layer_tar([E("escape/kettle-pwned", data=b"x")])
    lay.tag(lay.image([l1, l2], "gzip"), "hostile")
    registry.push(lay_dir, "hostile", "test/hostile")
    with service(store, registry.host) as svc:
        with pytest.raises(InvalidArgument) as exc:
            svc.pull(f"{registry.host}/test/hostile:hostile")
        assert "escape" in str(exc.value) and "symlink" in str(exc.value)
        assert svc.list() == []
        assert len(svc.snapshots.list()) == 1  # the harmless first layer only
    assert not os.path.exists("/etc/kettle-pwned")


# --- store management -----------------------------------------------------------------------


def test_gc_keeps_what_is_used(registry: Registry, store: str) -> None:
    bb = f"{registry.host}/test/img:busybox"
    rich = f"{registry.host}/test/img:rich"
    with service(store, registry.host) as svc:
        svc.pull(bb)
        rrec = svc.pull(rich)
        svc.prepare_rootfs(rich, "container")
        svc.remove(rich)  # gc runs; the container still needs rich's layers
        assert len([i for i in svc.snapshots.list() if i.kind == "committed"]) == 4
        assert not svc.content.has(rrec.manifest)
        svc.remove_rootfs("container")
        result = svc.gc()
        assert len(result.snapshots_removed) == 3
        assert [i.kind for i in svc.snapshots.list()] == ["committed"]
        assert svc.verify() == []
        svc.prune(all_unused=True)
        assert svc.list() == [] and list(svc.content.list()) == []


def test_export_import_round_trip(registry: Registry, layouts: dict[str, Any], tmp_path) -> None:
    ref = f"{registry.host}/test/img:rich"
    archive = str(tmp_path / "rich.tar")
    with service(str(tmp_path / "a"), registry.host) as svc:
        rec = svc.pull(ref)
        svc.export_archive([ref], archive)
        with mounted(svc, ref, "x") as root:
            expected = tree_meta(root)
    with service(str(tmp_path / "b")) as svc:
        [imported] = svc.import_archive(archive)
        assert imported.name == ref and imported.config == rec.config
        with mounted(svc, ref, "y") as root:
            assert tree_meta(root) == expected
        assert svc.verify() == []
    # Other tools read the export too.
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{archive}:rich"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout)["config"]["digest"] == rec.config


def test_import_docker_save_archive(layouts: dict[str, Any], tmp_path) -> None:
    archive = str(tmp_path / "docker.tar")
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{layouts['path']}:busybox",
         f"docker-archive:{archive}:example.com/saved/busybox:v1"],
        check=True, capture_output=True,
    )  # fmt: skip
    expected = tree_meta(umoci_rootfs(layouts["path"], "busybox", str(tmp_path / "u")))
    with service(str(tmp_path / "s")) as svc:
        [rec] = svc.import_archive(archive)
        assert rec.name == "example.com/saved/busybox:v1"
        with mounted(svc, rec.name, "c") as root:
            assert tree_meta(root) == expected


def test_tree_meta_sees_attributes(layouts: dict[str, Any], tmp_path) -> None:
    """The umoci comparison is only as good as tree_meta: it must see what matters."""
    meta = tree_meta(umoci_rootfs(layouts["path"], "rich", str(tmp_path / "u")))
    assert meta["usr/lib"][1:4] == (0o750, 3, 3)
    assert meta["usr/bin/su"][1] == 0o4755
    assert meta["dev/null"][6] == os.makedev(1, 3)
    assert meta["xattr-file"][7] == (("user.kettle", b"yes"),)
    assert "etc/motd" not in meta and "opt/app/old1" not in meta and "var/lib/data/db" not in meta
    assert meta["<hardlinks>"] == (("usr/bin/tool", "usr/bin/tool2"),)
