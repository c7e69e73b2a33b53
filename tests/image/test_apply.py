"""The layer unpacker: what it writes; hostile layers refused, nothing outside touched."""

from __future__ import annotations

import gzip
import io
import os
import stat
from collections.abc import Iterator

import pytest
from oci_fixture import E, layer_tar

from kettle.errors import InvalidArgument, ResourceExhausted
from kettle.image.decompress import decompressor
from kettle.snapshot.apply import ApplyLimits, apply_layer
from kettle.snapshot.copy import merge_layers
from kettle.snapshot.crosscheck import check_layer_parents

ROOT = os.geteuid() == 0


def snapshot_tree(path: str) -> dict[str, tuple]:
    """Everything observable under path (type, mode, owner, size, content, target, mtime)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            body = b""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    body = f.read()
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
            out[os.path.relpath(p, path)] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size, body, target, st.st_mtime_ns,
            )  # fmt: skip
    return out


class Sandbox:
    def __init__(self, base: str) -> None:
        self.base = base
        self.outside = os.path.join(base, "outside")
        self.layer = os.path.join(base, "layer")
        os.makedirs(os.path.join(self.outside, "sub"))
        with open(os.path.join(self.outside, "victim"), "w") as f:
            f.write("original\n")
        os.chmod(os.path.join(self.outside, "victim"), 0o640)
        os.makedirs(self.layer)
        self.before = snapshot_tree(self.outside)
        self.base_before = sorted(os.listdir(base))

    def apply(self, entries: list[E], **kw: object) -> object:
        fd = os.open(self.layer, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return apply_layer(io.BytesIO(layer_tar(entries)), fd, "layer sha256:test", **kw)  # type: ignore[arg-type]
        finally:
            os.close(fd)

    def untouched(self) -> None:
        assert snapshot_tree(self.outside) == self.before
        assert sorted(os.listdir(self.base)) == self.base_before


@pytest.fixture
def sandbox(tmp_path) -> Iterator[Sandbox]:
    yield Sandbox(str(tmp_path))


def test_regular_layer(sandbox: Sandbox) -> None:
    r = sandbox.apply(
        [
            E("d", "dir", mode=0o750),
            E("d/f", data=b"data", mode=0o4755, mtime=1_234_567_890),
            E("d/l", "symlink", linkname="/abs/target"),
            E("d/h", "hardlink", linkname="d/f"),
            E("implicit/parent/file", data=b"x"),
            E("d/.wh.gone"),
            E("o/.wh..wh..opq"),
        ]
    )
    L = sandbox.layer
    st = os.stat(f"{L}/d/f")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_mtime == 1_234_567_890
    assert os.readlink(f"{L}/d/l") == "/abs/target"
    assert os.stat(f"{L}/d/h").st_ino == st.st_ino
    assert stat.S_IMODE(os.stat(f"{L}/d").st_mode) == 0o750
    wh = os.lstat(f"{L}/d/gone")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    name = "trusted.overlay.opaque" if ROOT else "user.overlay.opaque"
    assert os.getxattr(f"{L}/o", name) == b"y"
    assert r.implicit_dirs == {"implicit", "implicit/parent", "o"}  # type: ignore[attr-defined]
    sandbox.untouched()


def test_diff_id_covers_whole_stream(sandbox: Sandbox) -> None:
    import hashlib

    raw = layer_tar([E("f", data=b"x")]) + b"\0" * 4096  # trailing padding after the end
    fd = os.open(sandbox.layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        r = apply_layer(io.BytesIO(raw), fd, "l")
    finally:
        os.close(fd)
    assert r.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_empty_layer(sandbox: Sandbox) -> None:
    fd = os.open(sandbox.layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        r = apply_layer(io.BytesIO(b"\0" * 1024), fd, "l")
    finally:
        os.close(fd)
    assert r.entries == 0 and os.listdir(sandbox.layer) == []


def test_replacing_entries(sandbox: Sandbox) -> None:
    sandbox.apply(
        [
            E("x", "dir"),
            E("x/inner", data=b"1"),
            E("x", data=b"now a file"),
            E("y", data=b"file"),
            E("y", "dir", mode=0o700),
            E("y/z", data=b"in dir"),
        ]
    )
    with open(f"{sandbox.layer}/x", "rb") as f:
        assert f.read() == b"now a file"
    assert os.path.isdir(f"{sandbox.layer}/y")
    sandbox.untouched()


def _hostile(outside: str) -> list[tuple[str, list[E], str]]:
    return [
        ("absolute path", [E("/etc/passwd", data=b"x")], "absolute"),
        ("dotdot", [E("../outside/victim", data=b"pwned")], "'..'"),
        ("dotdot inside", [E("a/../../outside/victim", data=b"pwned")], "'..'"),
        (
            "symlink escape, absolute",
            [E("esc", "symlink", linkname=outside), E("esc/victim", data=b"pwned")],
            "symlink",
        ),
        (
            "symlink escape, relative",
            [E("esc", "symlink", linkname="../outside"), E("esc/new", data=b"pwned")],
            "symlink",
        ),
        (
            "symlink escape, deeper",
            [
                E("a", "dir"),
                E("a/esc", "symlink", linkname="../../outside"),
                E("a/esc/sub/x", data=b"p"),
            ],
            "symlink",
        ),
        ("hardlink absolute", [E("h", "hardlink", linkname=f"{outside}/victim")], "absolute"),
        ("hardlink dotdot", [E("h", "hardlink", linkname="../outside/victim")], "'..'"),
        (
            "hardlink through symlink",
            [E("esc", "symlink", linkname=outside), E("h", "hardlink", linkname="esc/victim")],
            "not a file of this layer",
        ),
        ("hardlink missing", [E("h", "hardlink", linkname="nowhere")], "not in this layer"),
        (
            "chmod through symlink",
            [E("esc", "symlink", linkname=outside), E("esc/victim", "dir", mode=0o777)],
            "symlink",
        ),
        (
            "chmod of a dir through symlink",
            [E("esc", "symlink", linkname=outside), E("esc/sub", "dir", mode=0o777)],
            "symlink",
        ),
        (
            "whiteout through symlink",
            [E("esc", "symlink", linkname=outside), E("esc/.wh.victim")],
            "symlink",
        ),
        (
            "opaque through symlink",
            [E("esc", "symlink", linkname=outside), E("esc/.wh..wh..opq")],
            "symlink",
        ),
        ("empty whiteout", [E(".wh.")], "names no entry"),
        ("root replaced", [E(".", data=b"x")], "replaces the layer root"),
        (
            "overlay xattr",
            [E("f", data=b"x", xattrs={"trusted.overlay.redirect": b"/outside"})],
            "overlay control xattr",
        ),
        ("deep nesting", [E("a/" * 300 + "f", data=b"x")], "nested deeper"),
        ("long component", [E("x" * 300, data=b"x")], "component over 255"),
        ("long path", [E("ab/" * 1400 + "f", data=b"x")], "longer than 4096"),
        ("file under a file", [E("f", data=b"x"), E("f/g", data=b"y")], "not a directory"),
    ]


@pytest.mark.parametrize("case", range(21))
def test_hostile_layer_refused(sandbox: Sandbox, case: int) -> None:
    title, entries, message = _hostile(sandbox.outside)[case]
    with pytest.raises(InvalidArgument) as exc:
        sandbox.apply(entries)
    assert "layer sha256:test" in str(exc.value), title
    assert message in str(exc.value), (title, str(exc.value))
    sandbox.untouched()


def test_hostile_table_is_complete() -> None:
    assert len(_hostile("/x")) == 21


def test_contained_not_followed(sandbox: Sandbox) -> None:
    """Entries that replace a symlink, or hardlink a symlink, never act on its target."""
    sandbox.apply(
        [
            E("s", "symlink", linkname=f"{sandbox.outside}/victim"),
            E("h", "hardlink", linkname="s"),
            E("s", data=b"replaced", mode=0o777),
            E("d", "symlink", linkname=sandbox.outside),
            E("d", "dir", mode=0o777),
            E("w", "symlink", linkname=f"{sandbox.outside}/victim"),
            E(".wh.w"),
        ]
    )
    assert os.path.islink(f"{sandbox.layer}/h")
    assert os.path.isdir(f"{sandbox.layer}/d") and not os.path.islink(f"{sandbox.layer}/d")
    sandbox.untouched()


def test_size_limit_bounds_a_bomb(sandbox: Sandbox) -> None:
    tar = layer_tar([E("zeros", data=b"\0" * (8 << 20))])
    bomb = gzip.compress(tar)
    fd = os.open(sandbox.layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ResourceExhausted, match="exceeds the limit"):
            apply_layer(
                decompressor(io.BytesIO(bomb), "gzip", "l"),
                fd,
                "l",
                ApplyLimits(max_layer_size=1 << 20),
            )
    finally:
        os.close(fd)


def test_free_space_margin(sandbox: Sandbox) -> None:
    st = os.statvfs(sandbox.layer)
    free = st.f_bavail * st.f_frsize
    fd = os.open(sandbox.layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ResourceExhausted, match="margin"):
            apply_layer(
                io.BytesIO(layer_tar([E("big", data=b"1" * (17 << 20))])),
                fd,
                "l",
                ApplyLimits(free_space_margin=free + (1 << 40)),
            )
    finally:
        os.close(fd)


def _layer_dir(base: str, name: str, entries: list[E]) -> str:
    d = os.path.join(base, name)
    os.makedirs(d)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        apply_layer(io.BytesIO(layer_tar(entries)), fd, name)
    finally:
        os.close(fd)
    return d


def test_symlink_planted_in_earlier_layer(sandbox: Sandbox) -> None:
    base = sandbox.base
    l1 = _layer_dir(base, "l1", [E("esc", "symlink", linkname=sandbox.outside), E("ok", "dir")])
    with pytest.raises(InvalidArgument, match=r"symlink .* of a lower layer"):
        check_layer_parents([l1], {"esc", "ok"}, "layer 2")
    with pytest.raises(InvalidArgument, match="symlink"):
        check_layer_parents([l1], {"esc/deeper/still"}, "layer 2")
    check_layer_parents([l1], {"ok", "new/dir"}, "layer 2")
    # Whited out, or replaced by a directory in a middle layer: no longer a symlink.
    l2 = _layer_dir(base, "l2", [E(".wh.esc")])
    check_layer_parents([l1, l2], {"esc"}, "layer 3")
    l2b = _layer_dir(base, "l2b", [E("esc", "dir")])
    check_layer_parents([l1, l2b], {"esc/x"}, "layer 3")
    assert snapshot_tree(sandbox.outside) == sandbox.before


def test_copy_merge_follows_overlay_rules(tmp_path) -> None:
    base = str(tmp_path)
    l1 = _layer_dir(
        base,
        "l1",
        [
            E("a", "dir"),
            E("a/keep", data=b"k"),
            E("a/gone", data=b"g"),
            E("o", "dir"),
            E("o/hidden", data=b"h"),
            E("s", "symlink", linkname="a"),
            E("h1", data=b"hard"),
            E("h2", "hardlink", linkname="h1"),
        ],
    )
    l2 = _layer_dir(
        base,
        "l2",
        [
            E("a/.wh.gone"),
            E("o/.wh..wh..opq"),
            E("o/new", data=b"n"),
            E("s", "dir"),
            E("s/x", data=b"x"),
        ],
    )
    target = os.path.join(base, "merged")
    os.makedirs(target)
    merge_layers([l1, l2], target)
    assert sorted(os.listdir(f"{target}/a")) == ["keep"]
    assert sorted(os.listdir(f"{target}/o")) == ["new"]
    assert os.path.isdir(f"{target}/s") and not os.path.islink(f"{target}/s")
    assert os.stat(f"{target}/h1").st_ino == os.stat(f"{target}/h2").st_ino


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_entries_stay_sparse(tmp_path, fmt: str) -> None:
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 20)
        f.seek(10 << 20)
        f.write(b"middle")
        f.seek((64 << 20) - 3)
        f.write(b"end")
    archive = tmp_path / "a.tar"
    subprocess.run(
        ["tar", "--sparse", f"--format={fmt}", "-cf", str(archive), "-C", str(src), "sparse"],
        check=True,
    )
    layer = tmp_path / "layer"
    layer.mkdir()
    fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with open(archive, "rb") as f:
            apply_layer(f, fd, "l")
    finally:
        os.close(fd)
    st = os.stat(layer / "sparse")
    assert st.st_size == 64 << 20
    assert st.st_blocks * 512 < 1 << 20  # holes were not written out
    with open(layer / "sparse", "rb") as f:
        f.seek(10 << 20)
        assert f.read(6) == b"middle"
        f.seek((64 << 20) - 3)
        assert f.read() == b"end"
