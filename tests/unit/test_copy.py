"""kctl cp's tar handling on directory fds (kettle.daemon.copy_tar), on temporary dirs."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kettle.cli.commands import cp as cli
from kettle.daemon.copy import ChunkReader
from kettle.daemon.copy_root import id_mappers
from kettle.daemon.copy_tar import (
    TarWriter,
    _Exact,
    clean_path,
    extract_tar,
    rebase,
    tar_stream,
)
from kettle.errors import FailedPrecondition, InvalidArgument


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    buf.seek(0)
    return buf


def _file(name: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_000_000
    return info


def _dir(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = _file(name, mode)
    info.type = tarfile.DIRTYPE
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = _file(name, 0o777)
    info.type, info.linkname = kind, target
    return info


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    d = tmp_path / "dest"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield d, fd
    finally:
        os.close(fd)


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- extraction -------------------------------------------------------------------------------


def test_extract_makes_files_dirs_links_and_modes(dest: tuple[Path, int]) -> None:
    d, fd = dest
    src = _tar(
        (_dir("top", 0o750), None),
        (_file("top/f", 0o4711), b"data"),
        (_link("top/s", "/etc/passwd"), None),
        (_link("top/h", "top/f", tarfile.LNKTYPE), None),
    )
    extract_tar(src, fd, "test")
    assert (d / "top" / "f").read_bytes() == b"data"
    assert stat.S_IMODE((d / "top" / "f").stat().st_mode) == 0o4711
    assert stat.S_IMODE((d / "top").stat().st_mode) == 0o750
    assert os.readlink(d / "top" / "s") == "/etc/passwd"
    assert (d / "top" / "h").stat().st_ino == (d / "top" / "f").stat().st_ino
    assert (d / "top" / "f").stat().st_mtime == 1_000_000


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/abs", "./../x", "a/../.."])
def test_escaping_names_are_refused(dest: tuple[Path, int], tmp_path: Path, name: str) -> None:
    _d, fd = dest
    with pytest.raises(InvalidArgument, match=r"absolute|'\.\.'"):
        extract_tar(_tar((_file(name), b"evil")), fd, "test")
    assert _tree(tmp_path) == ["dest"]


def test_entry_through_an_existing_symlink_is_refused(
    dest: tuple[Path, int], tmp_path: Path
) -> None:
    d, fd = dest
    outside = tmp_path / "outside"
    outside.mkdir()
    (d / "link").symlink_to(outside)
    with pytest.raises(InvalidArgument, match="symlink"):
        extract_tar(_tar((_file("link/x"), b"evil")), fd, "test")
    assert list(outside.iterdir()) == []


def test_symlink_from_the_archive_is_never_written_through(
    dest: tuple[Path, int], tmp_path: Path
) -> None:
    _d, fd = dest
    outside = tmp_path / "outside"
    outside.mkdir()
    src = _tar((_link("l", str(outside)), None), (_file("l/x"), b"evil"))
    with pytest.raises(InvalidArgument, match="symlink"):
        extract_tar(src, fd, "test")
    assert list(outside.iterdir()) == []


def test_a_file_entry_replaces_a_symlink_instead_of_writing_through_it(
    dest: tuple[Path, int], tmp_path: Path
) -> None:
    d, fd = dest
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (d / "f").symlink_to(victim)
    extract_tar(_tar((_file("f"), b"new")), fd, "test")
    assert victim.read_text() == "untouched"
    assert not (d / "f").is_symlink() and (d / "f").read_bytes() == b"new"


def test_hardlink_out_of_the_archive_is_refused(dest: tuple[Path, int], tmp_path: Path) -> None:
    _d, fd = dest
    (tmp_path / "secret").write_text("s")
    with pytest.raises(InvalidArgument):
        extract_tar(_tar((_link("h", "../secret", tarfile.LNKTYPE), None)), fd, "test")


def test_directory_and_non_directory_never_replace_each_other(dest: tuple[Path, int]) -> None:
    d, fd = dest
    (d / "dir").mkdir()
    (d / "file").write_text("x")
    with pytest.raises(InvalidArgument, match="cannot overwrite directory"):
        extract_tar(_tar((_file("dir"), b"x")), fd, "test")
    with pytest.raises(InvalidArgument, match="cannot overwrite non-directory"):
        extract_tar(_tar((_dir("file"), None)), fd, "test")
    assert (d / "dir").is_dir() and (d / "file").read_text() == "x"


def test_the_destination_directory_itself_is_left_alone(dest: tuple[Path, int]) -> None:
    d, fd = dest
    d.chmod(0o711)
    extract_tar(_tar((_dir(".", 0o700), None), (_file("./a"), b"a")), fd, "test")
    assert stat.S_IMODE(d.stat().st_mode) == 0o711
    assert (d / "a").read_bytes() == b"a"


def test_empty_archive_and_garbage(dest: tuple[Path, int]) -> None:
    _d, fd = dest
    extract_tar(io.BytesIO(b"\0" * 1024), fd, "test")
    with pytest.raises(InvalidArgument, match="test"):
        extract_tar(io.BytesIO(b"not a tar at all" * 64), fd, "test")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_override_and_id_mapping(dest: tuple[Path, int]) -> None:
    d, fd = dest
    extract_tar(_tar((_file("a", uid=5, gid=6), b"")), fd, "t", owner=(7, 8))
    assert ((d / "a").stat().st_uid, (d / "a").stat().st_gid) == (7, 8)
    to_host, to_ctr = id_mappers(
        {
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
            }
        }
    )
    extract_tar(_tar((_file("b", uid=5, gid=6), b"")), fd, "t", ids=to_host)
    assert ((d / "b").stat().st_uid, (d / "b").stat().st_gid) == (100005, 200006)
    assert to_ctr(100005, 200006) == (5, 6)
    assert to_ctr(5, 6) == (65534, 65534)


def test_rename_rebases_the_top_entry(dest: tuple[Path, int]) -> None:
    d, fd = dest
    src = _tar(
        (_dir("."), None), (_file("./x"), b"x"), (_link("./h", "./x", tarfile.LNKTYPE), None)
    )
    extract_tar(src, fd, "test", rename=rebase(".", "new"))
    assert _tree(d) == ["new", "new/h", "new/x"]
    fn = rebase("a", "b")
    assert [fn(n) for n in ("a", "a/x", "ab", "c/a")] == ["b", "b/x", "ab", "c/a"]


def test_chunk_reader_hands_out_at_most_n_bytes() -> None:
    r = ChunkReader(b"abc", iter([b"", b"defgh", b"i"]))
    got = []
    while piece := r.read(2):
        assert len(piece) <= 2
        got.append(piece)
    assert b"".join(got) == b"abcdefghi"


# --- writing ----------------------------------------------------------------------------------


def _archive(parent: Path, base: str, arcname: str) -> tarfile.TarFile:
    buf = io.BytesIO()
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        w = TarWriter(buf)
        w.add(fd, base, arcname)
        w.close()
    finally:
        os.close(fd)
    buf.seek(0)
    return tarfile.open(fileobj=buf)


def test_writer_stores_a_tree_without_following_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("content")
    (tree / "sub" / "f").chmod(0o600)
    os.link(tree / "sub" / "f", tree / "hard")
    (tree / "out").symlink_to("/")
    os.mkfifo(tree / "fifo")
    tf = _archive(tmp_path, "tree", "renamed")
    m = {i.name: i for i in tf.getmembers()}
    assert set(m) == {
        "renamed",
        "renamed/sub",
        "renamed/sub/f",
        "renamed/hard",
        "renamed/out",
        "renamed/fifo",
    }
    assert m["renamed/out"].issym() and m["renamed/out"].linkname == "/"
    assert m["renamed/fifo"].isfifo()
    # sorted order: "hard" comes first and carries the data; "sub/f" is the link to it
    assert m["renamed/hard"].isfile() and m["renamed/sub/f"].islnk()
    assert m["renamed/sub/f"].linkname == "renamed/hard"
    f = tf.extractfile(m["renamed/hard"])
    assert f is not None and f.read() == b"content"
    assert m["renamed/hard"].mode == 0o600


def test_writer_of_a_directory_contents_names_entries_dot(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    tf = _archive(tmp_path, ".", ".")
    assert sorted(i.name for i in tf.getmembers()) == [".", "./a"]


def test_writer_never_opens_what_is_not_a_regular_file_any_more(tmp_path: Path) -> None:
    """lstat said regular file, but a FIFO is there by the time it is opened: opening it
    for reading would block (a device would be read); the writer looks again instead."""
    os.mkfifo(tmp_path / "p")
    fake = os.stat_result((stat.S_IFREG | 0o644, 1, 1, 1, 0, 0, 10, 0, 0, 0))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        w = TarWriter(io.BytesIO())
        done = []
        t = threading.Thread(target=lambda: done.append(w._add(fd, "p", "p", fake)), daemon=True)
        t.start()
        t.join(10)
        assert done == [False]
    finally:
        os.close(fd)


def test_writer_gives_up_on_an_entry_that_keeps_changing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_text("x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        w = TarWriter(io.BytesIO())
        monkeypatch.setattr(w, "_add", lambda *a: False)
        with pytest.raises(FailedPrecondition, match="kept changing"):
            w.add(fd, "f", "f")
    finally:
        os.close(fd)


def test_exact_pads_a_shrunk_file_and_cuts_a_grown_one(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    fd = os.open(p, os.O_RDONLY)
    try:
        r = _Exact(fd, 5)
        assert r.read(4) + r.read(4) == b"abc\0\0"
        os.lseek(fd, 0, os.SEEK_SET)
        r = _Exact(fd, 2)
        assert r.read(10) == b"ab" and r.read(10) == b""
    finally:
        os.close(fd)


def test_tar_stream_pieces_and_early_close(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(os.urandom(50_000))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        pieces = list(tar_stream(fd, ".", ".", chunk=64 << 10))
        assert len(pieces) > 5
        with tarfile.open(fileobj=io.BytesIO(b"".join(pieces))) as tf:
            assert len(tf.getmembers()) == 21
        it = tar_stream(fd, ".", ".", chunk=16 << 10)
        next(it)
        it.close()  # type: ignore[attr-defined]  # a generator: stops the writer thread
        assert not [t for t in threading.enumerate() if t.name == "cp-out"]
    finally:
        os.close(fd)


# --- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("", ("/", False, True)),
        ("/", ("/", False, True)),
        ("etc", ("/etc", False, False)),
        ("/etc/", ("/etc", False, True)),
        ("/etc/.", ("/etc", True, False)),
        ("/a/../../b", ("/b", False, False)),
        ("//x//y", ("/x/y", False, False)),
    ],
)
def test_clean_path(path: str, want: tuple[str, bool, bool]) -> None:
    assert clean_path(path) == want


def test_cli_splits_and_rebases_like_docker() -> None:
    assert cli._split("c:/x") == cli._Arg("c", "/x")
    assert cli._split("./c:/x") == cli._Arg("", "./c:/x")
    assert cli._split("/abs:x") == cli._Arg("", "/abs:x")
    assert cli._split("-") == cli._Arg("", "-")
    assert cli._split("plain") == cli._Arg("", "plain")
    with pytest.raises(InvalidArgument):
        cli._split(":/x")
    assert cli._rebase_name("/a/link", "/b/target") == ("/b/target", "link")
    assert cli._rebase_name("/a/link/.", "/b/target") == ("/b/target/.", "")
    assert cli._rebase_name("/a/same", "/b/same") == ("/b/same", "")
    assert cli._base("/x/.") == "." and cli._base("/") == "." and cli._base("/x/y/") == "y"


def test_cli_destination_rules(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert cli._destination(str(tmp_path / "dir"), "n", False) == (str(tmp_path / "dir"), "n")
    assert cli._destination(str(tmp_path / "file"), "n", False) == (str(tmp_path), "file")
    assert cli._destination(str(tmp_path / "new"), "n", True) == (str(tmp_path), "new")
    with pytest.raises(InvalidArgument, match="cannot copy a directory"):
        cli._destination(str(tmp_path / "file"), "n", True)
    with pytest.raises(InvalidArgument, match="not a directory"):
        cli._destination(str(tmp_path / "file") + "/", "n", False)
    with pytest.raises(Exception, match="does not exist"):
        cli._destination(str(tmp_path / "no" / "where"), "n", False)
    with pytest.raises(Exception, match="does not exist"):
        cli._destination(str(tmp_path / "newdir") + "/", "n", False)
