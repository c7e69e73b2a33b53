"""safepath against hostile trees: every test runs with openat2 and with the user-space walk."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kettle import syscalls as sc
from kettle.errors import SyscallError
from kettle.runtime import safepath


def _kernel_has_openat2() -> bool:
    try:
        os.close(sc.openat2(-100, "/", os.O_PATH | os.O_CLOEXEC, 0, sc.RESOLVE_IN_ROOT))
    except SyscallError as e:
        return e.errno != errno.ENOSYS
    return True


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        if not _kernel_has_openat2():
            pytest.skip("kernel has no openat2")
        monkeypatch.setattr(safepath, "_openat2_works", True)
    else:
        monkeypatch.setattr(safepath, "_openat2_works", False)
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp_path/root is the root; tmp_path/outside must never be touched."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (root / "real").mkdir()
    (root / "real" / "file").write_text("inside")
    (root / "afile").write_text("a file")
    return tmp_path


@pytest.fixture
def root_fd(tree: Path) -> Iterator[int]:
    fd = os.open(tree / "root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def where(fd: int) -> str:
    try:
        return safepath.fd_path(fd)
    finally:
        os.close(fd)


def snapshot(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- open_in_root ------------------------------------------------------------------------------


def test_plain_paths_resolve(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    assert where(safepath.open_in_root(root_fd, "/real/file", os.O_PATH)) == str(root / "real/file")
    assert where(safepath.open_in_root(root_fd, "real/./file", os.O_PATH)) == str(
        root / "real/file"
    )
    assert where(safepath.open_in_root(root_fd, "/", os.O_PATH)) == str(root)
    assert where(safepath.open_in_root(root_fd, "", os.O_PATH)) == str(root)
    assert where(safepath.open_in_root(root_fd, "/real/", os.O_PATH)) == str(root / "real")


def test_dotdot_stops_at_root(mode: str, tree: Path, root_fd: int) -> None:
    fd = safepath.open_in_root(root_fd, "/../../../real/../../real/file", os.O_PATH)
    assert where(fd) == str(tree / "root/real/file")


def test_absolute_symlink_stays_in_root(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    (root / "etc").symlink_to(tree / "outside")  # /etc -> the host's outside dir
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, "/etc/secret", os.O_RDONLY)
    assert info.value.errno == errno.ENOENT
    # the same path inside the root is what it names
    inner = root / str(tree / "outside").lstrip("/")
    inner.mkdir(parents=True)
    (inner / "secret").write_text("image file")
    fd = safepath.open_in_root(root_fd, "/etc/secret", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"image file"
    finally:
        os.close(fd)


def test_relative_escape_lands_on_root(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    (root / "real" / "up").symlink_to("../../../../../..")
    assert where(safepath.open_in_root(root_fd, "/real/up", os.O_PATH)) == str(root)
    assert where(safepath.open_in_root(root_fd, "/real/up/afile", os.O_PATH)) == str(root / "afile")
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, "/real/up/outside/secret", os.O_PATH)
    assert info.value.errno == errno.ENOENT


def test_dotdot_after_symlink_is_the_targets_parent(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "link").symlink_to("/a/b")
    assert where(safepath.open_in_root(root_fd, "/link/..", os.O_PATH)) == str(root / "a")


@pytest.mark.parametrize(
    "links",
    [
        {"loop": "loop"},
        {"l1": "l2", "l2": "l1"},
        {"l1": "/l2/x", "l2": "/l1/y"},
    ],
)
def test_symlink_loops_fail(mode: str, root_fd: int, tree: Path, links: dict[str, str]) -> None:
    for name, target in links.items():
        (tree / "root" / name).symlink_to(target)
    first = next(iter(links))
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, f"/{first}/z", os.O_PATH)
    assert info.value.errno == errno.ELOOP
    assert str(tree / "root") in str(info.value)  # the message names the rootfs


def test_long_chain_resolves(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    (root / "c0").symlink_to("real")
    for i in range(1, 20):
        (root / f"c{i}").symlink_to(f"/c{i - 1}")
    assert where(safepath.open_in_root(root_fd, "/c19/file", os.O_PATH)) == str(root / "real/file")


@pytest.mark.parametrize(("length", "ok"), [(40, True), (41, False)])
def test_symlink_limit_matches_the_kernel(
    mode: str, tree: Path, root_fd: int, length: int, ok: bool
) -> None:
    root = tree / "root"
    (root / "s1").symlink_to("real")
    for i in range(2, length + 1):
        (root / f"s{i}").symlink_to(f"s{i - 1}")
    if ok:
        assert where(safepath.open_in_root(root_fd, f"/s{length}", os.O_PATH)) == str(root / "real")
    else:
        with pytest.raises(SyscallError) as info:
            safepath.open_in_root(root_fd, f"/s{length}", os.O_PATH)
        assert info.value.errno == errno.ELOOP


def test_symlink_swapped_to_outside(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    link = root / "data"
    link.symlink_to("/real")
    assert where(safepath.open_in_root(root_fd, "/data/file", os.O_PATH)) == str(root / "real/file")
    # the image (or a container) swaps the link to point at a host directory
    link.unlink()
    link.symlink_to(tree / "outside")
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, "/data/secret", os.O_RDONLY)
    assert info.value.errno == errno.ENOENT
    link.unlink()
    link.symlink_to("../outside")
    with pytest.raises(SyscallError):
        safepath.open_in_root(root_fd, "/data/secret", os.O_RDONLY)


def test_nofollow_returns_the_link(mode: str, tree: Path, root_fd: int) -> None:
    (tree / "root" / "lnk").symlink_to("/real/file")
    fd = safepath.open_in_root(root_fd, "/lnk", os.O_PATH | os.O_NOFOLLOW)
    try:
        assert stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, "/lnk", os.O_RDONLY | os.O_NOFOLLOW)
    assert info.value.errno == errno.ELOOP


def test_reads_through_inner_symlink(mode: str, tree: Path, root_fd: int) -> None:
    (tree / "root" / "real" / "rel").symlink_to("file")
    fd = safepath.open_in_root(root_fd, "/real/rel", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"inside"
        assert fd not in (0, 1, 2) and not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_file_as_directory(mode: str, root_fd: int) -> None:
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, "/afile/x", os.O_PATH)
    assert info.value.errno == errno.ENOTDIR
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, "/afile", os.O_PATH | os.O_DIRECTORY)
    assert info.value.errno == errno.ENOTDIR


def test_no_symlinks(mode: str, tree: Path, root_fd: int) -> None:
    (tree / "root" / "proc").symlink_to("/real")
    with pytest.raises(SyscallError) as info:
        safepath.open_in_root(root_fd, "/proc", os.O_PATH, no_symlinks=True)
    assert info.value.errno == errno.ELOOP
    fd = safepath.open_in_root(root_fd, "/real/file", os.O_PATH, no_symlinks=True)
    os.close(fd)
    with pytest.raises(SyscallError) as info:
        safepath.mkdir_all_in_root(root_fd, "/proc/sub", no_symlinks=True)
    assert info.value.errno == errno.ELOOP
    assert not (tree / "root/real/sub").exists()


# --- mkdir_all_in_root -------------------------------------------------------------------------


def test_mkdir_all_creates_inside_through_absolute_symlink(
    mode: str, tree: Path, root_fd: int
) -> None:
    root = tree / "root"
    (root / "etc").symlink_to(tree / "outside")
    before = snapshot(tree / "outside")
    fd = safepath.mkdir_all_in_root(root_fd, "/etc/x/y")
    expected = root / str(tree / "outside").lstrip("/") / "x/y"
    assert where(fd) == str(expected)
    assert expected.is_dir()
    assert snapshot(tree / "outside") == before


def test_mkdir_all_through_escaping_relative_symlink(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    (root / "up").symlink_to("../../../../..")
    fd = safepath.mkdir_all_in_root(root_fd, "/up/up/made")
    assert where(fd) == str(root / "made")
    assert not (tree / "made").exists()


def test_mkdir_all_dangling_symlink_target_created_inside(
    mode: str, tree: Path, root_fd: int
) -> None:
    root = tree / "root"
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")  # /run does not exist yet
    fd = safepath.mkdir_all_in_root(root_fd, "/var/run/app")
    assert where(fd) == str(root / "run/app")


def test_mkdir_all_existing(mode: str, tree: Path, root_fd: int) -> None:
    fd = safepath.mkdir_all_in_root(root_fd, "/real")
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    with pytest.raises(SyscallError) as info:
        safepath.mkdir_all_in_root(root_fd, "/afile")
    assert info.value.errno == errno.ENOTDIR
    with pytest.raises(SyscallError) as info:
        safepath.mkdir_all_in_root(root_fd, "/afile/below")
    assert info.value.errno == errno.ENOTDIR


def test_mkdir_all_mode_and_loop(mode: str, tree: Path, root_fd: int) -> None:
    old = os.umask(0o022)
    try:
        os.close(safepath.mkdir_all_in_root(root_fd, "/m1/m2", 0o700))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tree / "root/m1/m2").stat().st_mode) == 0o700
    (tree / "root" / "loop").symlink_to("loop")
    with pytest.raises(SyscallError) as info:
        safepath.mkdir_all_in_root(root_fd, "/loop/x")
    assert info.value.errno == errno.ELOOP


def test_missing_tail_is_made_without_the_walk(
    monkeypatch: pytest.MonkeyPatch, tree: Path, root_fd: int
) -> None:
    """The usual case (only the last components are missing) stays in the kernel's resolver."""
    if not _kernel_has_openat2():
        pytest.skip("kernel has no openat2")

    def no_walk(*args: object, **kwargs: object) -> tuple[int, str]:
        raise AssertionError("walked")

    monkeypatch.setattr(safepath, "_openat2_works", True)
    monkeypatch.setattr(safepath, "_walk", no_walk)
    root = tree / "root"
    old = os.umask(0o022)
    try:
        assert where(safepath.mkdir_all_in_root(root_fd, "/real/a/b", 0o750)) == str(
            root / "real/a/b"
        )
        assert where(safepath.mkdir_all_in_root(root_fd, "/top")) == str(root / "top")
        fd = safepath.create_file_in_root(root_fd, "/new/dir/file", mode=0o640)
    finally:
        os.umask(old)
    try:
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert safepath.fd_path(fd) == str(root / "new/dir/file")
    finally:
        os.close(fd)
    assert stat.S_IMODE((root / "real/a").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "new/dir").stat().st_mode) == 0o755


def test_missing_tail_after_a_dangling_link_falls_back_to_the_walk(
    mode: str, tree: Path, root_fd: int
) -> None:
    root = tree / "root"
    (root / "real" / "gone").symlink_to("/elsewhere/deep")  # dangling, inside the root
    (root / "real" / "conf").symlink_to("/etc/conf")
    fds = len(os.listdir("/proc/self/fd"))
    assert where(safepath.mkdir_all_in_root(root_fd, "/real/gone/x")) == str(
        root / "elsewhere/deep/x"
    )
    assert where(safepath.create_file_in_root(root_fd, "/real/conf")) == str(root / "etc/conf")
    assert (root / "etc/conf").is_file()
    assert not (tree / "elsewhere").exists()
    assert len(os.listdir("/proc/self/fd")) == fds  # nothing left open on the way


# --- create_file_in_root -----------------------------------------------------------------------


def test_create_file_new_with_exact_mode(mode: str, tree: Path, root_fd: int) -> None:
    old = os.umask(0o077)
    try:
        fd = safepath.create_file_in_root(root_fd, "/dev/console", mode=0o666)
    finally:
        os.umask(old)
    try:
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
        assert safepath.fd_path(fd) == str(tree / "root/dev/console")
    finally:
        os.close(fd)


def test_create_file_existing_is_kept(mode: str, tree: Path, root_fd: int) -> None:
    fd = safepath.create_file_in_root(root_fd, "/afile")
    os.close(fd)
    assert (tree / "root/afile").read_text() == "a file"
    fd = safepath.create_file_in_root(root_fd, "/real")
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)  # the caller decides what that means
    finally:
        os.close(fd)


def test_create_file_through_dangling_absolute_symlink(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    (root / "etc").mkdir()
    target = tree / "outside" / "resolv.conf"
    (root / "etc" / "resolv.conf").symlink_to(target)  # dangling inside, would hit the host
    fd = safepath.create_file_in_root(root_fd, "/etc/resolv.conf")
    inner = root / str(target).lstrip("/")
    assert where(fd) == str(inner)
    assert inner.is_file()
    assert not target.exists()


def test_create_file_in_symlinked_dir_outside(mode: str, tree: Path, root_fd: int) -> None:
    root = tree / "root"
    (root / "etc").symlink_to(tree / "outside")
    before = snapshot(tree / "outside")
    fd = safepath.create_file_in_root(root_fd, "/etc/hosts")
    assert where(fd).startswith(str(root) + "/")
    assert snapshot(tree / "outside") == before


# --- the fallback itself -----------------------------------------------------------------------


def test_enosys_switches_to_the_walk(
    monkeypatch: pytest.MonkeyPatch, tree: Path, root_fd: int
) -> None:
    calls = []

    def no_openat2(*args: object, **kwargs: object) -> int:
        calls.append(args)
        raise SyscallError("openat2", errno.ENOSYS)

    monkeypatch.setattr(safepath, "_openat2_works", True)
    monkeypatch.setattr(sc, "openat2", no_openat2)
    assert where(safepath.open_in_root(root_fd, "/real/file", os.O_PATH)) == str(
        tree / "root/real/file"
    )
    assert safepath._openat2_works is False
    os.close(safepath.open_in_root(root_fd, "/real", os.O_PATH))
    assert len(calls) == 1  # probed once per process


def test_eagain_is_retried(monkeypatch: pytest.MonkeyPatch, tree: Path, root_fd: int) -> None:
    if not _kernel_has_openat2():
        pytest.skip("kernel has no openat2")
    real = sc.openat2
    answers = [errno.EAGAIN, errno.EAGAIN]

    def flaky(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
        if answers:
            raise SyscallError("openat2", answers.pop())
        return real(dirfd, path, flags, mode, resolve)

    monkeypatch.setattr(safepath, "_openat2_works", True)
    monkeypatch.setattr(sc, "openat2", flaky)
    assert where(safepath.open_in_root(root_fd, "/real/file", os.O_PATH)) == str(
        tree / "root/real/file"
    )
    assert not answers


def test_shown_path() -> None:
    assert safepath.shown_path(-1, "/etc/x") == "/etc/x"
    fd = os.open("/", os.O_PATH)
    try:
        assert safepath.shown_path(fd, "/etc/x") == "/etc/x"
        assert safepath.proc_fd(fd) == f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
