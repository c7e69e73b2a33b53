"""prepare() + finalize() on the real kernel: a busybox rootfs, in a forked child's mount ns.

The child unshares a mount namespace (and, for the user-namespace case, a user and pid
namespace), builds the root filesystem and execs busybox, which prints what the container
sees to a pipe.  Every mount dies with the child's namespace; the tests check that nothing
shows up on the host and that every child is reaped.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import stat
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kettle import syscalls as sc
from kettle.runtime import rootfs as rootfs_mod
from kettle.runtime import safepath
from kettle.runtime.mounts import MountInfo, parse_mountinfo

pytestmark = pytest.mark.privileged

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "ls", "cat", "echo", "touch", "mkdir", "stat")
SEP = "@@@@"


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not BUSYBOX.is_file():
        pytest.skip("needs a static /bin/busybox")


@pytest.fixture(autouse=True)
def no_host_leaks(tmp_path: Path) -> Iterator[None]:
    """Nothing under tmp_path may be mounted on the host, before or after."""
    _require()
    assert _host_mounts_under(tmp_path) == []
    yield
    assert _host_mounts_under(tmp_path) == []


def _host_mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [i.mountpoint for i in parse_mountinfo(text) if i.mountpoint.startswith(str(path))]


def build_rootfs(root: Path) -> Path:
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "secretdir", "var/cache/pkg"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "hostname").write_text("image\n")
    (root / "secretfile").write_text("do not show\n")
    (root / "secretdir" / "inside").write_text("hidden\n")
    cache = root / "var" / "cache"
    (cache / "pkg" / "index").write_text("cached\n")
    os.chmod(cache / "pkg" / "index", 0o640)
    os.link(cache / "pkg" / "index", cache / "pkg" / "index.hard")
    (cache / "pkg" / "latest").symlink_to("index")
    return root


@dataclass
class Result:
    status: int
    out: str
    err: str

    def section(self, i: int) -> str:
        return self.out.split(SEP + "\n")[i]


def run_container(
    tmp_path: Path,
    spec: dict[str, Any],
    script: str,
    *,
    no_pivot: bool = False,
    userns: bool = False,
    before: Callable[[], None] | None = None,
    walk_only: bool = False,
    after_pivot: Callable[[], None] | None = None,
) -> Result:
    """Fork; in the child build the rootfs from spec and exec busybox sh -c script."""
    errfile = tmp_path / "child-stderr"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            os.close(r)
            err = os.open(errfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(w, 1)
            os.dup2(err, 2)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if walk_only:
                safepath._openat2_works = False
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_PRIVATE | sc.MS_REC)
            if before is not None:
                before()
            if userns:
                _enter_userns_and_fork()
            rootfs_mod.prepare(spec, spec["root"]["path"], userns=userns, rootless=False)
            rootfs_mod.finalize(
                spec, spec["root"]["path"], no_pivot=no_pivot, after_pivot=after_pivot
            )
            os.execv("/bin/busybox", ["sh", "-c", script])
        except BaseException:
            os.write(2, traceback.format_exc().encode())
        os._exit(99)
    os.close(w)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([r], [], [], 120)
            if not ready:  # a hung child must not hang the suite
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    err_text = errfile.read_text() if errfile.exists() else ""
    return Result(os.waitstatus_to_exitcode(status), b"".join(chunks).decode(), err_text)


def _enter_userns_and_fork() -> None:  # pragma: no cover - runs in the child
    """Become root of a new user namespace (mapped to host root) and pid 1 of a new pid ns.

    The parent of the new pid 1 waits for it and exits with its status.
    """
    sc.unshare(sc.CLONE_NEWUSER)
    Path("/proc/self/uid_map").write_text("0 0 1\n")
    Path("/proc/self/setgroups").write_text("deny\n")
    Path("/proc/self/gid_map").write_text("0 0 1\n")
    sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def by_mountpoint(text: str) -> dict[str, MountInfo]:
    return {i.mountpoint: i for i in parse_mountinfo(text)}


def opts(info: MountInfo) -> set[str]:
    return set(info.options.split(","))


def ls_dev(text: str) -> dict[str, str]:
    """name -> the `ls -l` line for it."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or line.startswith("total"):
            continue
        name = parts[parts.index("->") - 1] if "->" in parts else parts[-1]
        out[name] = line
    return out


def base_spec(root: Path) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "root": {"path": str(root), "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": "mount"}],
            "maskedPaths": ["/secretfile", "/secretdir", "/proc/kcore", "/not/there"],
            "readonlyPaths": ["/proc/sys", "/not/there/either"],
            "devices": [
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640},
            ],
        },
    }


SCRIPT = f"""
cat /proc/self/mountinfo; echo {SEP}
ls -l /dev; echo {SEP}
ls -a /; echo {SEP}
touch /newfile 2>&1; echo "touch=$?"; echo {SEP}
cat /secretfile; ls /secretdir; echo {SEP}
( : > /proc/sys/kernel/domainname ) 2>&1; echo "sysctl=$?"; echo {SEP}
cat /data/marker /etc/hostname; echo {SEP}
ls -l /var/cache/pkg; cat /var/cache/pkg/latest; echo new > /var/cache/new; echo "cache=$?"; \
echo {SEP}
ls /sys/fs/cgroup; echo {SEP}
echo done
"""


@pytest.mark.parametrize("no_pivot", [False, True], ids=["pivot_root", "no_pivot"])
def test_full_rootfs(tmp_path: Path, no_pivot: bool) -> None:
    from kettle.cgroups import host as cghost

    root = build_rootfs(tmp_path / "rootfs")
    data = tmp_path / "hostdata"
    data.mkdir()
    (data / "marker").write_text("from the host\n")
    hostname = tmp_path / "hostname"
    hostname.write_text("kettle-test\n")
    spec = base_spec(root)
    spec["mounts"] += [
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro"]},
        {"destination": "/etc/hostname", "source": str(hostname), "options": ["bind", "nosuid"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "nodev"]},
        {"destination": "/var/cache", "type": "tmpfs", "source": "c", "options": ["tmpcopyup"]},
    ]
    spec["linux"]["rootfsPropagation"] = "rslave"

    res = run_container(tmp_path, spec, SCRIPT, no_pivot=no_pivot)
    assert res.status == 0, res.err
    assert res.out.rstrip().endswith("done"), res.out + res.err

    mi = by_mountpoint(res.section(0))
    expected = {
        "/",
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/data",
        "/etc/hostname",
        "/run",
        "/var/cache",
        "/proc/sys",
        "/secretfile",
        "/secretdir",
    }
    assert expected <= set(mi), sorted(mi)
    # nothing of the host is left: the old root went with the pivot (or was never in reach)
    leftover = {p for p in mi if p not in expected and not p.startswith("/sys/fs/cgroup/")}
    assert leftover == set()
    assert "ro" in opts(mi["/"])
    assert mi["/proc"].fstype == "proc"
    assert mi["/dev"].fstype == "tmpfs" and {"rw", "nosuid"} <= opts(mi["/dev"])
    assert mi["/dev/pts"].fstype == "devpts" and "ptmxmode=666" in mi["/dev/pts"].super_options
    assert {"nosuid", "nodev", "noexec"} <= opts(mi["/dev/shm"])
    assert mi["/dev/mqueue"].fstype == "mqueue"
    assert mi["/sys"].fstype == "sysfs" and "ro" in opts(mi["/sys"])
    assert "ro" in opts(mi["/data"])
    assert "nosuid" in opts(mi["/etc/hostname"]) and "rw" in opts(mi["/etc/hostname"])
    assert mi["/run"].fstype == "tmpfs" and {"ro", "nodev"} <= opts(mi["/run"])
    assert "ro" in opts(mi["/proc/sys"]) and mi["/proc/sys"].fstype == "proc"
    assert mi["/secretfile"].root == "/null"  # /dev/null of the container's /dev bound over it
    assert mi["/secretdir"].fstype == "tmpfs" and "ro" in opts(mi["/secretdir"])
    assert "/proc/kcore" in mi or not os.path.exists("/proc/kcore")

    dev = ls_dev(res.section(1))
    for name, numbers in [
        ("null", "1, 3"),
        ("zero", "1, 5"),
        ("full", "1, 7"),
        ("random", "1, 8"),
        ("urandom", "1, 9"),
        ("tty", "5, 0"),
    ]:
        assert dev[name].startswith("crw-rw-rw-"), dev[name]
        assert re.search(numbers.replace(" ", r"\s+"), dev[name]), dev[name]
    assert dev["fuse"].startswith("crw-r-----") and re.search(r"10,\s+229", dev["fuse"])
    assert dev["fd"].rstrip().endswith("-> /proc/self/fd")
    assert dev["stdin"].rstrip().endswith("-> /proc/self/fd/0")
    assert dev["stdout"].rstrip().endswith("-> /proc/self/fd/1")
    assert dev["stderr"].rstrip().endswith("-> /proc/self/fd/2")
    assert dev["ptmx"].rstrip().endswith("-> pts/ptmx")
    assert ("core" in dev) == os.path.exists("/proc/kcore")
    assert {"pts", "shm", "mqueue"} <= set(dev)

    top = set(res.section(2).split())
    assert {"bin", "etc", "proc", "dev", "data", "secretfile"} <= top
    assert "hostdata" not in top and "rootfs" not in top

    assert "touch=0" not in res.section(3) and "Read-only file system" in res.section(3)
    assert res.section(4).strip() == ""  # masked file reads empty, masked dir lists nothing
    assert "sysctl=0" not in res.section(5) and "Read-only file system" in res.section(5)
    assert res.section(6) == "from the host\nkettle-test\n"

    cache = res.section(7)
    assert "cached" in cache and "cache=0" in cache
    assert re.search(r"-rw-r-----\s+2 .* index\b", cache), cache  # mode and hard link kept
    assert "latest -> index" in cache
    assert not (root / "var" / "cache" / "new").exists()  # the copy, not the image, took it

    cgroups = set(res.section(8).split())
    if cghost.detect_mode() == "v2":
        assert "cgroup.procs" in cgroups
    else:
        v1 = cghost.v1_mounts(cghost.Host())
        names = {os.path.basename(m.mountpoint) for m in v1.values()}
        assert names <= cgroups
        own = cghost.own_cgroups(cghost.Host())
        memory = mi.get("/sys/fs/cgroup/memory")
        if memory is not None and "memory" in own:
            # our own cgroup, not the host's whole hierarchy, and read-only
            assert memory.root == own["memory"] and "ro" in opts(memory)

    # the image itself is untouched: no device nodes or links were written into it
    assert sorted(p.name for p in (root / "dev").iterdir()) == []


@pytest.mark.parametrize(
    ("propagation", "tag"),
    [("rshared", "shared:"), ("runbindable", "unbindable"), ("rprivate", None)],
)
def test_rootfs_propagation(tmp_path: Path, propagation: str, tag: str | None) -> None:
    root = build_rootfs(tmp_path / "rootfs")
    spec = base_spec(root)
    spec["linux"]["rootfsPropagation"] = propagation
    res = run_container(tmp_path, spec, "cat /proc/self/mountinfo")
    assert res.status == 0, res.err
    top = by_mountpoint(res.out)["/"]
    if tag is None:
        assert top.optional == ()
    else:
        assert any(o.startswith(tag) for o in top.optional), top.optional


@pytest.mark.parametrize("walk_only", [False, True], ids=["openat2", "walk"])
def test_hostile_image_symlinks_stay_inside(tmp_path: Path, walk_only: bool) -> None:
    root = build_rootfs(tmp_path / "rootfs")
    # host places the image's symlinks point at; they exist, so following them would "work"
    hostdir = tmp_path / "hostdir-outside"
    (hostdir / "x").mkdir(parents=True)
    (hostdir / "x" / "host-only").write_text("host\n")
    hostfile = tmp_path / "hostfile-outside"
    hostfile.write_text("host file\n")
    shutil.rmtree(root / "etc")
    (root / "etc").symlink_to(hostdir)  # /etc -> a host directory (absolute)
    (root / "tmp" / "escape").symlink_to("../../../../../../../..")
    (root / "resolv.conf").symlink_to(hostfile)  # an absolute link to a host file
    (root / "var" / "lib").mkdir()
    (root / "var" / "lib" / "deep").symlink_to(hostdir)  # absolute, below the top level
    src = tmp_path / "src"
    src.mkdir()
    (src / "marker").write_text("bound\n")
    srcfile = tmp_path / "srcfile"
    srcfile.write_text("file bound\n")
    spec = base_spec(root)
    spec["mounts"] += [
        {"destination": "/etc/x", "source": str(src), "options": ["rbind", "ro"]},
        {"destination": f"/tmp/escape{tmp_path}/y", "source": str(src), "options": ["bind"]},
        {"destination": "/resolv.conf", "source": str(srcfile), "options": ["bind"]},
        {"destination": "/var/lib/deep/z", "type": "tmpfs", "source": "tmpfs"},
    ]
    (tmp_path / "child-stderr").touch()
    before = sorted(os.listdir(tmp_path))
    script = (
        f"cat /proc/self/mountinfo; echo {SEP}; cat /etc/x/marker /resolv.conf; "
        f"ls /etc/x; echo {SEP}; ls -a /var/lib/deep/z; echo ok"
    )
    res = run_container(tmp_path, spec, script, walk_only=walk_only)
    assert res.status == 0, res.err
    mi = by_mountpoint(res.section(0))
    # visible in the container at the path the image's symlink names *inside* the rootfs
    assert f"{hostdir}/x" in mi and "ro" in opts(mi[f"{hostdir}/x"])
    assert f"{tmp_path}/y" in mi
    assert str(hostfile) in mi
    assert mi[f"{hostdir}/z"].fstype == "tmpfs"
    assert res.section(1).split() == ["bound", "file", "bound", "marker"]
    assert res.section(2).split() == [".", "..", "ok"]
    # the host's directory, file and tmp_path were not touched
    assert sorted(p.name for p in hostdir.iterdir()) == ["x"]
    assert [p.name for p in (hostdir / "x").iterdir()] == ["host-only"]
    assert hostfile.read_text() == "host file\n"
    assert sorted(os.listdir(tmp_path)) == before
    inside = root / str(hostdir).lstrip("/")
    assert (inside / "x").is_dir() and (inside / "z").is_dir()
    assert (root / str(tmp_path).lstrip("/") / "y").is_dir()
    assert (root / str(hostfile).lstrip("/")).is_file()


def test_after_pivot_runs_in_the_new_root_before_lockdown(tmp_path: Path) -> None:
    root = build_rootfs(tmp_path / "rootfs")
    spec = base_spec(root)

    def probe() -> None:  # pragma: no cover - runs in the child
        facts = [
            os.path.exists("/bin/busybox"),  # inside the new root
            not os.path.exists(str(tmp_path)),  # the host is gone
            os.access("/proc/sys/kernel/domainname", os.W_OK),  # sysctls still writable
            os.access("/", os.W_OK),  # root not read-only yet
            os.path.getsize("/secretfile") > 0,  # not masked yet
        ]
        os.write(1, f"facts={facts}\n".encode())

    script = "( : > /proc/sys/kernel/domainname ) 2>&1; cat /secretfile; echo end"
    res = run_container(tmp_path, spec, script, after_pivot=probe)
    assert res.status == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == f"facts={[True] * 5}"
    assert "Read-only file system" in lines[1] and lines[-1] == "end"
    assert "do not show" not in res.out


def test_symlink_into_proc_is_refused(tmp_path: Path) -> None:
    root = build_rootfs(tmp_path / "rootfs")
    (root / "sneaky").symlink_to("/proc/sys/kernel")
    spec = base_spec(root)
    spec["mounts"].append({"destination": "/sneaky", "type": "tmpfs", "source": "tmpfs"})
    res = run_container(tmp_path, spec, "echo should-not-run")
    assert res.status == 99
    assert "mounts[5].destination: /sneaky resolves to /proc/sys/kernel" in res.err
    assert "inside /proc" in res.err
    assert "should-not-run" not in res.out


def test_user_namespace(tmp_path: Path) -> None:
    """Uid 0 in a new user namespace: devices are bound, sysfs is /sys bound, locked flags kept."""
    root = build_rootfs(tmp_path / "rootfs")
    locked = tmp_path / "locked"
    locked.mkdir()

    def mount_locked_source() -> None:  # pragma: no cover - runs in the child
        # Made by real root before the user namespace exists, so its flags become locked.
        flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME
        sc.mount("tmpfs", str(locked), "tmpfs", flags, "size=1m")
        (locked / "marker").write_text("locked\n")

    spec = base_spec(root)
    spec["mounts"][2]["options"] = ["nosuid", "noexec", "newinstance", "ptmxmode=0666"]
    spec["mounts"] += [
        {"destination": "/locked", "source": str(locked), "options": ["rbind", "ro"]},
    ]
    script = f"cat /proc/self/mountinfo; echo {SEP}; ls -l /dev; echo {SEP}; cat /locked/marker"
    res = run_container(tmp_path, spec, script, userns=True, before=mount_locked_source)
    assert res.status == 0, res.err
    mi = by_mountpoint(res.section(0))
    # bound from the host, since sysfs needs a network namespace of our own
    assert mi["/sys"].fstype == "sysfs" and "ro" in opts(mi["/sys"])
    assert {"ro", "nosuid", "nodev", "noexec", "noatime"} <= opts(mi["/locked"])
    for name in ("null", "zero", "tty", "fuse"):
        assert f"/dev/{name}" in mi, name  # host nodes bound onto empty files
    dev = ls_dev(res.section(1))
    assert dev["null"].startswith("c") and dev["ptmx"].rstrip().endswith("-> pts/ptmx")
    assert res.section(2).strip() == "locked"
    assert "ro" in opts(mi["/"]) and "ro" in opts(mi["/proc/sys"])


def test_console_bind(tmp_path: Path) -> None:
    root = build_rootfs(tmp_path / "rootfs")
    spec = base_spec(root)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            sc.unshare(sc.CLONE_NEWNS)
            rootfs_mod.prepare(spec, str(root), userns=False, rootless=False)
            _master, slave = os.openpty()
            rootfs_mod.bind_console(str(root), os.ttyname(slave))
            rootfs_mod.finalize(spec, str(root), no_pivot=False)
            st = os.stat("/dev/console")
            ok = stat.S_ISCHR(st.st_mode) and st.st_rdev == os.fstat(slave).st_rdev
            os.write(w, b"same-pty" if ok else b"other")
        except BaseException:
            os.write(w, traceback.format_exc().encode())
        os._exit(0)
    os.close(w)
    try:
        got = b""
        while chunk := os.read(r, 4096):
            got += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert got == b"same-pty", got.decode()
    assert not (root / "dev" / "console").exists()  # it lived on the container's /dev tmpfs


CGROUP_MOUNT = {
    "destination": "/sys/fs/cgroup",
    "type": "cgroup",
    "source": "cgroup",
    "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
}


def test_cgroup_v1_in_a_cgroup_namespace(tmp_path: Path) -> None:
    from kettle.cgroups import host as cghost

    if cghost.detect_mode() == "v2":
        pytest.skip("the host has no cgroup v1 hierarchies")
    root = build_rootfs(tmp_path / "rootfs")
    spec = base_spec(root)
    spec["mounts"].append(CGROUP_MOUNT)
    spec["linux"]["namespaces"].append({"type": "cgroup"})
    res = run_container(
        tmp_path,
        spec,
        "cat /proc/self/mountinfo",
        before=lambda: sc.unshare(sc.CLONE_NEWCGROUP),
    )
    assert res.status == 0, res.err
    mi = by_mountpoint(res.out)
    groups = {p: i for p, i in mi.items() if p.startswith("/sys/fs/cgroup/")}
    names = {os.path.basename(m.mountpoint) for m in cghost.v1_mounts(cghost.Host()).values()}
    assert {p.rsplit("/", 1)[1] for p in groups} == names
    for info in groups.values():
        # fresh mounts, rooted at the namespace's own cgroup
        assert info.fstype == "cgroup" and info.root == "/" and "ro" in opts(info)
    assert "ro" in opts(mi["/sys/fs/cgroup"])


@pytest.mark.parametrize("cgroupns", [False, True], ids=["host_cgroupns", "own_cgroupns"])
def test_cgroup_v2(tmp_path: Path, cgroupns: bool) -> None:
    import time
    import uuid

    from kettle.cgroups import host as cghost

    mode = cghost.detect_mode()
    if mode == "v1":
        pytest.skip("the host has no cgroup2 hierarchy")
    v2root = Path("/sys/fs/cgroup" if mode == "v2" else "/sys/fs/cgroup/unified")
    mine = v2root / f"kettle-rootfs-test-{uuid.uuid4().hex[:12]}"
    mine.mkdir()
    try:

        def before() -> None:  # pragma: no cover - runs in the child
            if mode == "hybrid":
                # A pure cgroup2 layout, in the child's private mount namespace only.
                sc.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0)
            Path("/sys/fs/cgroup", mine.name, "cgroup.procs").write_text(str(os.getpid()))
            if cgroupns:
                sc.unshare(sc.CLONE_NEWCGROUP)

        root = build_rootfs(tmp_path / "rootfs")
        spec = base_spec(root)
        spec["mounts"].append(CGROUP_MOUNT)
        if cgroupns:
            spec["linux"]["namespaces"].append({"type": "cgroup"})
        script = f"cat /proc/self/mountinfo; echo {SEP}; ls /sys/fs/cgroup; cat /proc/self/cgroup"
        res = run_container(tmp_path, spec, script, before=before)
        assert res.status == 0, res.err
        mi = by_mountpoint(res.section(0))
        cg = mi["/sys/fs/cgroup"]
        assert cg.fstype == "cgroup2" and "ro" in opts(cg)
        assert not [p for p in mi if p.startswith("/sys/fs/cgroup/")]
        listing = res.section(1).split()
        assert "cgroup.procs" in listing
        if cgroupns:
            assert cg.root == "/" and "0::/" in listing
        else:
            # only our own cgroup's directory, not the host's tree
            assert cg.root == f"/{mine.name}"
            assert f"0::/{mine.name}" in listing
    finally:
        for _ in range(50):  # the reaped child leaves the cgroup asynchronously
            try:
                mine.rmdir()
                break
            except OSError:
                time.sleep(0.05)
        assert not mine.exists()
