"""kctl cp against a real kettled: both ways, running and stopped containers, and hostile
symlinks (the CVE-2018-15664 class) that must never let a copy reach the host."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import BIN, Image, Kettled, wait_for

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="session")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", image.ref)
    return image.ref


@pytest.fixture
def names(kettled: Kettled) -> Iterator[list[str]]:
    """Containers a test makes; removed afterwards whatever happened."""
    made: list[str] = []
    try:
        yield made
    finally:
        for n in made:
            kettled.kctl("rm", "-f", n)


def _name() -> str:
    return f"cp-{uuid.uuid4().hex[:10]}"


def _running(k: Kettled, ref: str, names: list[str], script: str = "sleep 1000") -> str:
    name = _name()
    names.append(name)
    k.ok("run", "-d", "--name", name, ref, "sh", "-c", script)
    return name


def _stopped(k: Kettled, ref: str, names: list[str], script: str = "true") -> str:
    """A container that ran `script` and exited."""
    name = _name()
    names.append(name)
    k.ok("run", "-d", "--name", name, ref, "sh", "-c", script)
    k.ok("wait", name)
    return name


def _created(k: Kettled, ref: str, names: list[str]) -> str:
    name = _name()
    names.append(name)
    k.ok("create", "--name", name, ref, "true")
    return name


def _pid(k: Kettled, name: str) -> int:
    info = json.loads(k.ok("inspect", name))[0]
    pid = info["pid"]
    assert isinstance(pid, int) and pid > 0
    return pid


def _inside(k: Kettled, name: str, path: str) -> Path:
    """A running container's file, seen from the host (the test's own check only)."""
    return Path(f"/proc/{_pid(k, name)}/root") / path.lstrip("/")


def _error(res: subprocess.CompletedProcess[str], *words: str) -> str:
    assert res.returncode != 0, res.stdout
    text = res.stderr
    assert text.startswith("kctl: ") and text.count("\n") == 1, text
    for w in words:
        assert w in text, text
    return text


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A tar with regular files (bytes) and directories (None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _kctl_bytes(k: Kettled, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "kctl"), "--address", k.address, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


# --- the ordinary cases -----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["running", "exited", "created"])
def test_a_file_goes_in_and_comes_back(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path, state: str
) -> None:
    make = {"running": _running, "exited": _stopped, "created": _created}[state]
    name = make(kettled, ref, names)
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello\n")
    src.chmod(0o640)
    kettled.ok("cp", str(src), f"{name}:/tmp/")
    kettled.ok("cp", str(src), f"{name}:/tmp/renamed.txt")
    out = tmp_path / "out"
    out.mkdir()
    kettled.ok("cp", f"{name}:/tmp/hello.txt", str(out))
    kettled.ok("cp", f"{name}:/tmp/renamed.txt", str(out / "again.txt"))
    for got in (out / "hello.txt", out / "again.txt"):
        assert got.read_bytes() == b"hello\n"
        assert got.stat().st_mode & 0o7777 == 0o640
    if state == "running":
        inner = _inside(kettled, name, "/tmp/hello.txt")
        assert inner.read_bytes() == b"hello\n"
        assert (inner.stat().st_uid, inner.stat().st_gid) == (0, 0)


def test_stopped_container_sees_the_copy_when_started(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _name()
    names.append(name)
    kettled.ok("create", "--name", name, ref, "cat", "/etc/copied")
    (tmp_path / "copied").write_text("from the host\n")
    kettled.ok("cp", str(tmp_path / "copied"), f"{name}:/etc/")
    kettled.ok("start", name)
    assert kettled.ok("wait", name).strip() == "0"
    assert "from the host" in kettled.ok("logs", name)


def test_ownership_is_root_unless_archive(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _running(kettled, ref, names)
    src = tmp_path / "owned"
    src.write_text("x")
    os.chown(src, 1234, 5678)
    kettled.ok("cp", str(src), f"{name}:/tmp/plain")
    kettled.ok("cp", "-a", str(src), f"{name}:/tmp/kept")
    plain = _inside(kettled, name, "/tmp/plain").stat()
    kept = _inside(kettled, name, "/tmp/kept").stat()
    assert (plain.st_uid, plain.st_gid) == (0, 0)
    assert (kept.st_uid, kept.st_gid) == (1234, 5678)
    # and out again: -a keeps the container's owners on the host
    out = tmp_path / "out"
    out.mkdir()
    kettled.ok("cp", "-a", f"{name}:/tmp/kept", str(out))
    st = (out / "kept").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_directory_with_modes_symlinks_and_hardlinks_round_trips(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _stopped(kettled, ref, names)
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "sub").chmod(0o750)
    (tree / "exe").write_text("#!/bin/sh\n")
    (tree / "exe").chmod(0o4755)
    (tree / "sub" / "deeper" / "file").write_text("deep")
    (tree / "abs-link").symlink_to("/etc/passwd")
    (tree / "rel-link").symlink_to("sub/deeper/file")
    os.link(tree / "exe", tree / "exe-hard")
    os.mkfifo(tree / "fifo")
    kettled.ok("cp", str(tree), f"{name}:/srv")  # /srv does not exist: it becomes the copy
    out = tmp_path / "out"
    kettled.ok("cp", f"{name}:/srv", str(out))
    assert (out / "sub").stat().st_mode & 0o7777 == 0o750
    assert (out / "exe").stat().st_mode & 0o7777 == 0o4755
    assert (out / "sub" / "deeper" / "file").read_text() == "deep"
    assert os.readlink(out / "abs-link") == "/etc/passwd"
    assert os.readlink(out / "rel-link") == "sub/deeper/file"
    assert (out / "exe").stat().st_ino == (out / "exe-hard").stat().st_ino
    assert (out / "fifo").is_fifo()


def test_trailing_dot_copies_contents_and_existing_dir_receives_inside(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _running(kettled, ref, names, "mkdir -p /data/a && echo 1 > /data/a/one && sleep 1000")
    out = tmp_path / "out"
    out.mkdir()
    kettled.ok("cp", f"{name}:/data/.", str(out))
    assert (out / "a" / "one").read_text() == "1\n"
    kettled.ok("cp", f"{name}:/data", str(out))  # exists: /data lands inside it
    assert (out / "data" / "a" / "one").read_text() == "1\n"
    # into the container the same way
    kettled.ok("cp", f"{out}/.", f"{name}:/data/")
    assert _inside(kettled, name, "/data/data/a/one").read_text() == "1\n"


def test_symlink_is_copied_as_a_symlink_unless_follow(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _running(
        kettled, ref, names, "echo target > /tmp/real && ln -s /tmp/real /tmp/link && sleep 1000"
    )
    kettled.ok("cp", f"{name}:/tmp/link", str(tmp_path / "asis"))
    assert os.readlink(tmp_path / "asis") == "/tmp/real"
    kettled.ok("cp", "-L", f"{name}:/tmp/link", str(tmp_path / "followed"))
    assert not (tmp_path / "followed").is_symlink()
    assert (tmp_path / "followed").read_text() == "target\n"
    out = tmp_path / "d"
    out.mkdir()
    kettled.ok("cp", "-L", f"{name}:/tmp/link", str(out))
    assert (out / "link").read_text() == "target\n"  # the name asked for, not the target's


def test_tar_streams_on_stdin_and_stdout(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _stopped(kettled, ref, names)
    kettled.ok("cp", str(tmp_path), f"{name}:/tmp")  # some directory to receive
    archive = _tar([("dir", None), ("dir/x", b"xx"), ("y", b"yyy")])
    res = _kctl_bytes(kettled, "cp", "-", f"{name}:/tmp", stdin=archive)
    assert res.returncode == 0, res.stderr
    res = _kctl_bytes(kettled, "cp", f"{name}:/tmp/dir", "-")
    assert res.returncode == 0, res.stderr
    with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert set(members) == {"dir", "dir/x"}
        f = tf.extractfile(members["dir/x"])
        assert f is not None and f.read() == b"xx"
    res = _kctl_bytes(kettled, "cp", "-", f"{name}:/tmp/y", stdin=archive)
    assert res.returncode != 0 and b"must be a directory" in res.stderr


def test_errors_are_one_line(kettled: Kettled, ref: str, names: list[str], tmp_path: Path) -> None:
    name = _running(kettled, ref, names)
    _error(kettled.kctl("cp", "nosuch-ctr:/etc/passwd", str(tmp_path)), "no such container")
    _error(
        kettled.kctl("cp", f"{name}:/nope", str(tmp_path)),
        f"could not find the file /nope in container {name}",
    )
    _error(kettled.kctl("cp", str(tmp_path / "missing"), f"{name}:/tmp"), "could not find")
    _error(
        kettled.kctl("cp", f"{name}:/etc/passwd", str(tmp_path / "no" / "dir")), "does not exist"
    )
    _error(kettled.kctl("cp", str(tmp_path), f"{name}:/etc/passwd"), "cannot copy a directory")
    _error(kettled.kctl("cp", str(tmp_path), f"{name}:/etc/passwd/"), "not a directory")
    _error(kettled.kctl("cp", str(tmp_path), str(tmp_path)), "CONTAINER:PATH")
    _error(kettled.kctl("cp", f"{name}:/a", f"{name}:/b"), "between containers")


# --- hostile containers -----------------------------------------------------------------------


def _plant(host_dir: Path) -> str:
    """Links a container may plant: to "/" and up out of its root, which lead to the host's
    files if followed outside the root.  The container has its own copy of host_dir's path,
    with its own "secret", where the links lead when they are resolved inside it."""
    return (
        "ln -s / /hostroot && ln -s ../../../../../../.. /up && mkdir -p /tmp/d"
        " && ln -s /../../../../etc /tmp/d/etc-up"
        f" && mkdir -p {host_dir} && echo inside > {host_dir}/secret"
    )


@pytest.mark.parametrize("state", ["running", "exited"])
def test_planted_symlinks_stay_inside_the_container(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path, state: str
) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host secret\n")
    make = _running if state == "running" else _stopped
    script = _plant(host_dir) + (" && sleep 1000" if state == "running" else "")
    name = make(kettled, ref, names, script)
    payload = tmp_path / "payload"
    payload.write_text("written by cp\n")
    out = tmp_path / "out"
    out.mkdir()
    for i, via in enumerate(("/hostroot", "/up")):
        # Into the directory through the link: lands in the container's copy of it.
        kettled.ok("cp", str(payload), f"{name}:{via}{host_dir}/")
        assert sorted(os.listdir(host_dir)) == ["secret"], via
        kettled.ok("cp", f"{name}:{host_dir}/payload", str(out / f"in{i}"))
        assert (out / f"in{i}").read_text() == "written by cp\n"
        # Out of it through the link: the container's secret, never the host's.
        kettled.ok("cp", f"{name}:{via}{host_dir}/secret", str(out / f"s{i}"))
        assert (out / f"s{i}").read_text() == "inside\n", via
    assert (host_dir / "secret").read_text() == "host secret\n"
    # Its /etc/passwd, not the host's, through the link that climbs out.
    kettled.ok("cp", f"{name}:/tmp/d/etc-up/passwd", str(out / "passwd"))
    assert "alice:x:1500" in (out / "passwd").read_text()


def test_a_destination_that_is_a_symlink_to_root_is_resolved_in_the_container(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _running(kettled, ref, names, _plant(tmp_path) + " && sleep 1000")
    payload = tmp_path / "dropped-by-kctl-cp"
    payload.write_text("x")
    kettled.ok("cp", str(payload), f"{name}:/hostroot")
    assert not Path("/dropped-by-kctl-cp").exists()
    assert _inside(kettled, name, "/dropped-by-kctl-cp").read_text() == "x"


@pytest.mark.parametrize(
    "entry",
    ["../escape", "a/../../escape", "/abs-escape", "./../escape"],
)
def test_archives_with_escaping_names_are_refused(
    kettled: Kettled, ref: str, names: list[str], entry: str
) -> None:
    name = _running(kettled, ref, names)
    archive = _tar([("ok", b"fine"), (entry, b"evil")])
    res = _kctl_bytes(kettled, "cp", "-", f"{name}:/tmp", stdin=archive)
    assert res.returncode != 0
    text = res.stderr.decode()
    assert text.startswith("kctl: ") and text.count("\n") == 1, text
    assert "absolute" in text or "'..'" in text, text
    assert not _inside(kettled, name, "/escape").exists()
    assert not Path("/tmp/escape").exists() and not Path("/abs-escape").exists()


def test_an_archive_entry_through_a_planted_symlink_is_refused(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _running(kettled, ref, names, _plant(tmp_path / "x") + " && sleep 1000")
    rel = str(tmp_path).lstrip("/")
    archive = _tar([(f"hostroot/{rel}/planted", b"evil")])
    res = _kctl_bytes(kettled, "cp", "-", f"{name}:/", stdin=archive)
    assert res.returncode != 0 and b"symlink" in res.stderr, res.stderr
    assert not (tmp_path / "planted").exists()


def test_a_symlink_swapped_during_copies_never_reaches_the_host(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    """A container process keeps swapping /swap between a real directory and a symlink to
    the host's directory (as seen from the host, and as "/" would be if followed outside)
    while kctl cp goes in and out through it many times."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host secret\n")
    before = sorted(os.listdir(host_dir))
    # /swap is a directory one moment and a symlink to host_dir (which, followed inside the
    # container, is its own copy of that path) the next.
    script = (
        f"mkdir -p /swap {host_dir} && echo inside > /swap/secret && echo inside >"
        f" {host_dir}/secret && ln -s {host_dir} /lnk && while true; do mv /swap /swap.d;"
        " mv /lnk /swap; mv /swap /lnk; mv /swap.d /swap; done"
    )
    name = _running(kettled, ref, names, script)
    payload = tmp_path / "swapped-in"
    payload.write_text("cp payload\n")
    out = tmp_path / "out"
    out.mkdir()
    stop = threading.Event()
    failures: list[str] = []
    copied_in = []

    def copy_in() -> None:
        while not stop.is_set():
            res = kettled.kctl("cp", str(payload), f"{name}:/swap/")
            copied_in.append(res.returncode == 0)

    t = threading.Thread(target=copy_in)
    t.start()
    try:
        for i in range(60):
            res = kettled.kctl("cp", f"{name}:/swap/secret", str(out / f"s{i}"))
            if res.returncode == 0:
                got = (out / f"s{i}").read_text()
                if got != "inside\n":
                    failures.append(got)
    finally:
        stop.set()
        t.join()
    assert not failures
    assert any(copied_in) and len(list(out.iterdir())) > 0  # the copies did run
    assert sorted(os.listdir(host_dir)) == before
    assert (host_dir / "secret").read_text() == "host secret\n"


def test_nothing_is_left_mounted_after_copies_into_stopped_containers(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    name = _stopped(kettled, ref, names)
    (tmp_path / "f").write_text("x")
    kettled.ok("cp", str(tmp_path / "f"), f"{name}:/tmp/")
    kettled.ok("cp", f"{name}:/tmp/f", str(tmp_path / "g"))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(kettled.base) not in mounts
    pid = kettled.proc.pid if kettled.proc else 0
    assert str(kettled.base) not in Path(f"/proc/{pid}/mountinfo").read_text()
    # and the container still starts (nothing holds its rootfs)
    kettled.ok("start", name)
    wait_for(lambda: json.loads(kettled.ok("inspect", name))[0]["status"] == "exited", "exit")


@pytest.mark.parametrize("state", ["running", "exited"])
def test_volumes_are_seen_and_a_read_only_root_refuses(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path, state: str
) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "was-there").write_text("host side\n")
    name = _name()
    names.append(name)
    script = "sleep 1000" if state == "running" else "true"
    kettled.ok(
        "run", "-d", "--read-only", "-v", f"{vol}:/data", "--name", name, ref, "sh", "-c", script
    )
    if state == "exited":
        kettled.ok("wait", name)
    (tmp_path / "f").write_text("into the volume\n")
    kettled.ok("cp", str(tmp_path / "f"), f"{name}:/data/")
    assert (vol / "f").read_text() == "into the volume\n"
    kettled.ok("cp", f"{name}:/data/was-there", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "host side\n"
    _error(kettled.kctl("cp", str(tmp_path / "f"), f"{name}:/etc/"), "read-only")
    assert str(vol) not in Path("/proc/self/mountinfo").read_text()


def test_kettled_killed_mid_copy_leaves_no_mount(
    kettled: Kettled, ref: str, names: list[str], tmp_path: Path
) -> None:
    """The stopped container's rootfs is mounted only in a namespace of kettled's own thread:
    never visible on the host, and gone with kettled."""
    name = _stopped(kettled, ref, names, "dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null")
    proc = subprocess.Popen(
        [str(BIN / "kctl"), "--address", kettled.address, "cp", f"{name}:/big", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert len(proc.stdout.read(1 << 20)) == 1 << 20  # the copy is under way, and stalls
        assert kettled.proc is not None
        own = Path(f"/proc/{kettled.proc.pid}/mountinfo").read_text()
        assert str(kettled.base) not in own
        kettled.kill9()
    finally:
        proc.kill()
        proc.wait()
        if kettled.proc is None:
            kettled.start()
    assert str(kettled.base) not in Path("/proc/self/mountinfo").read_text()
    kettled.ok("start", name)  # nothing holds its rootfs or its lock
    assert kettled.ok("wait", name).strip() == "0"
