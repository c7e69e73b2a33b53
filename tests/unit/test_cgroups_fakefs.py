"""A fake cgroupfs in tmp_path (v1, hybrid and v2 layouts) for the kettle.cgroups unit tests.

The fake replaces kettle.cgroups.fsutil's mkdir/write/rmdir so that a new cgroup directory
gets its control files, writes to a few control files act like the kernel (subtree_control,
devices.allow/deny, freezer.state, cgroup.freeze, cgroup.procs), and every write is recorded.
The other test_cgroups_* modules import it; its own tests check the host detection on it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kettle.cgroups import common, fsutil, stats
from kettle.cgroups import devices as devrules
from kettle.cgroups.host import Host, V1Mount, detect_mode, own_cgroups, v1_mounts
from kettle.errors import FailedPrecondition, SyscallError

V2_FILES: dict[str, dict[str, str]] = {
    "": {
        "cgroup.procs": "",
        "cgroup.subtree_control": "",
        "cgroup.events": "populated 0\nfrozen 0\n",
        "cgroup.freeze": "0",
        "cgroup.kill": "",
        "cgroup.type": "domain",
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
        "nr_periods 7\nnr_throttled 2\nthrottled_usec 30\n",
    },
    "memory": {
        "memory.max": "max",
        "memory.low": "0",
        "memory.swap.max": "max",
        "memory.current": "4096",
        "memory.swap.current": "0",
        "memory.peak": "8192",
        "memory.events": "low 0\nhigh 0\nmax 1\noom 1\noom_kill 3\n",
        "memory.stat": "anon 1024\nfile 2048\n",
    },
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0"},
    "pids": {"pids.max": "max", "pids.current": "2"},
    "io": {
        "io.weight": "default 100",
        "io.max": "",
        "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n",
    },
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "hugetlb": {
        "hugetlb.2MB.max": "max",
        "hugetlb.2MB.current": "0",
        "hugetlb.2MB.events": "max 0\n",
        "hugetlb.1GB.max": "max",
        "hugetlb.1GB.current": "0",
        "hugetlb.1GB.events": "max 0\n",
    },
}

V1_FILES: dict[str, dict[str, str]] = {
    "": {"cgroup.procs": "", "tasks": "", "cgroup.clone_children": "0", "notify_on_release": "0"},
    "cpu": {
        "cpu.shares": "1024",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "-1",
        "cpu.cfs_burst_us": "0",
        "cpu.idle": "0",
        "cpu.stat": "nr_periods 5\nnr_throttled 1\nthrottled_time 999\n",
    },
    "cpuacct": {
        "cpuacct.usage": "123456",
        "cpuacct.usage_percpu": "100000 23456",
        "cpuacct.usage_all": "cpu user system\n0 60000 40000\n1 20000 3456\n",
        "cpuacct.stat": "user 2\nsystem 1\n",
    },
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712",
        "memory.soft_limit_in_bytes": "9223372036854771712",
        "memory.memsw.limit_in_bytes": "9223372036854771712",
        "memory.usage_in_bytes": "4096",
        "memory.max_usage_in_bytes": "8192",
        "memory.failcnt": "0",
        "memory.memsw.usage_in_bytes": "4096",
        "memory.memsw.max_usage_in_bytes": "8192",
        "memory.memsw.failcnt": "0",
        "memory.stat": "cache 100\nrss 200\ntotal_cache 300\ntotal_rss 400\n",
        "memory.swappiness": "60",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "memory.use_hierarchy": "1",
    },
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {
        "freezer.state": "THAWED",
        "freezer.self_freezing": "0",
        "freezer.parent_freezing": "0",
    },
    "blkio": {
        "blkio.bfq.weight": "100",
        "blkio.bfq.weight_device": "",
        "blkio.throttle.read_bps_device": "",
        "blkio.throttle.write_bps_device": "",
        "blkio.throttle.read_iops_device": "",
        "blkio.throttle.write_iops_device": "",
        "blkio.bfq.io_service_bytes_recursive": "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
        "blkio.bfq.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
    },
    "pids": {"pids.max": "max", "pids.current": "1"},
    "hugetlb": {
        "hugetlb.2MB.limit_in_bytes": "9223372036854771712",
        "hugetlb.2MB.usage_in_bytes": "0",
        "hugetlb.2MB.max_usage_in_bytes": "0",
        "hugetlb.2MB.failcnt": "0",
    },
    "name=systemd": {},
}

V1_DIRS = {"name=systemd": "systemd"}


def _put(d: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (d / name).write_text(text)


class FakeCgroupfs:
    """A fake cgroup tree; use .host with new_manager(..., host=fake.host)."""

    def __init__(
        self,
        tmp: Path,
        mp: pytest.MonkeyPatch,
        mode: str,
        *,
        v1_controllers: tuple[str, ...] = (
            "cpu",
            "cpuacct",
            "cpuset",
            "memory",
            "devices",
            "freezer",
            "blkio",
            "pids",
            "name=systemd",
        ),
        v2_controllers: tuple[str, ...] = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids"),
        unified_controllers: tuple[str, ...] = ("hugetlb",),
        own: str = "/",
        own_v2: str = "/user.slice/session-1.scope",
        drop_files: tuple[str, ...] = (),
    ) -> None:
        self.root = tmp / "cgroup"
        self.root.mkdir()
        self.mode = mode
        self.drop_files = set(drop_files)
        self.writes: list[tuple[str, str]] = []
        self.kills: list[tuple[int, int]] = []
        self.kind: dict[Path, str] = {}  # directory -> controller ("" = cgroup2)
        self.dev_state: dict[Path, devrules.V1State] = {}
        mountinfo: list[str] = []
        self_cgroup: list[str] = []
        mountinfo.append(f"30 20 0:27 / {self.root} rw - tmpfs tmpfs rw")
        if mode == "v2":
            self._v2_root(self.root, v2_controllers)
            mountinfo[0] = f"30 20 0:27 / {self.root} rw - cgroup2 cgroup2 rw"
            self_cgroup.append(f"0::{own_v2}")
        else:
            for i, c in enumerate(v1_controllers):
                d = self.root / V1_DIRS.get(c, c)
                d.mkdir()
                self.kind[d] = c
                _put(d, V1_FILES[""])
                _put(d, self._v1_files(c))
                if c == "cpuset":
                    (d / "cpuset.cpus").write_text("0-3")
                    (d / "cpuset.mems").write_text("0")
                mountinfo.append(f"{40 + i} 30 0:{40 + i} / {d} rw - cgroup cgroup rw,{c}")
                self_cgroup.append(f"{i + 1}:{c}:{own}")
            if mode == "hybrid":
                u = self.root / "unified"
                u.mkdir()
                self._v2_root(u, unified_controllers)
                mountinfo.append(f"60 30 0:60 / {u} rw - cgroup2 cgroup2 rw")
            self_cgroup.append("0::/")
        # a mount outside the root and a bind of a hierarchy elsewhere must be ignored
        mountinfo.append("70 20 0:70 / /elsewhere/cpu rw - cgroup cgroup rw,cpu")
        (tmp / "mountinfo").write_text("\n".join(mountinfo) + "\n")
        (tmp / "self-cgroup").write_text("\n".join(self_cgroup) + "\n")
        self.host = Host(
            root=str(self.root),
            mountinfo=str(tmp / "mountinfo"),
            self_cgroup=str(tmp / "self-cgroup"),
            systemd_dir=str(tmp / "run-systemd-system"),
        )
        self._write = fsutil.write
        self._mkdir = fsutil.mkdir
        self._rmdir = fsutil.rmdir
        mp.setattr(fsutil, "write", self.write)
        mp.setattr(fsutil, "mkdir", self.mkdir)
        mp.setattr(fsutil, "rmdir", self.rmdir)
        mp.setattr(os, "kill", self._kill)

    # --- layout --------------------------------------------------------------------------

    def _v1_files(self, c: str) -> dict[str, str]:
        return {k: v for k, v in V1_FILES[c].items() if k not in self.drop_files}

    def _v2_root(self, d: Path, controllers: tuple[str, ...]) -> None:
        self.kind[d] = ""
        _put(
            d,
            {
                "cgroup.controllers": " ".join(controllers),
                "cgroup.procs": "",
                "cgroup.subtree_control": "",
                "cpu.stat": V2_FILES[""]["cpu.stat"],
            },
        )

    def _v2_files(self, d: Path, controllers: list[str]) -> None:
        _put(d, {k: v for k, v in V2_FILES[""].items() if k not in self.drop_files})
        (d / "cgroup.controllers").write_text(" ".join(controllers))
        for c in controllers:
            _put(d, {k: v for k, v in V2_FILES[c].items() if k not in self.drop_files})

    def _hierarchy(self, path: Path) -> str:
        for top, kind in self.kind.items():
            if path == top or top in path.parents:
                return kind
        raise AssertionError(f"{path} is outside the fake cgroupfs")

    def rel(self, path: str | Path) -> str:
        return str(Path(path).relative_to(self.root))

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    # --- the kernel's side -----------------------------------------------------------------

    def mkdir(self, path: str) -> bool:
        made = self._mkdir(path)
        if not made:
            return False
        p = Path(path)
        kind = self._hierarchy(p)
        if kind == "":
            enabled = (p.parent / "cgroup.subtree_control").read_text().split()
            self._v2_files(p, enabled)
        else:
            _put(p, V1_FILES[""])
            _put(p, self._v1_files(kind))
            if kind == "devices":
                parent = self.device_state(p.parent)
                self.dev_state[p] = devrules.V1State(parent.default_allow, dict(parent.exceptions))
                (p / "devices.list").write_text((p.parent / "devices.list").read_text())
        return True

    def rmdir(self, path: str) -> None:
        p = Path(path)
        if not p.is_dir():
            raise SyscallError("rmdir", errno.ENOENT, path)
        if any(x.is_dir() for x in p.iterdir()) or (p / "cgroup.procs").read_text().split():
            raise SyscallError("rmdir", errno.EBUSY, path)
        for f in p.iterdir():
            f.unlink()
        p.rmdir()

    def write(self, path: str, value: str) -> None:
        p = Path(path)
        self.writes.append((self.rel(p), value))
        if not p.exists():
            raise SyscallError("open", errno.ENOENT, path)
        name = p.name
        if name == "cgroup.procs":
            old = p.read_text().split()
            p.write_text(" ".join([*old, value]))
        elif name == "cgroup.subtree_control":
            self._subtree(p, value)
        elif name in ("devices.allow", "devices.deny"):
            self._devices(p, name == "devices.allow", value)
        elif name == "freezer.state":
            p.write_text(value)
            (p.parent / "freezer.self_freezing").write_text("1" if value == "FROZEN" else "0")
        elif name == "cgroup.freeze":
            p.write_text(value)
            (p.parent / "cgroup.events").write_text(f"populated 0\nfrozen {value}\n")
        elif name == "cpu.shares":
            # the kernel clamps to 2..262144
            p.write_text(str(max(2, min(262144, int(value)))))
        else:
            self._write(path, value)

    def _subtree(self, p: Path, value: str) -> None:
        offered = (p.parent / "cgroup.controllers").read_text().split()
        enabled = p.read_text().split()
        for word in value.split():
            c = word[1:]
            if c not in offered:
                raise SyscallError("write", errno.ENOENT, str(p))
            if word[0] == "+" and c not in enabled:
                enabled.append(c)
            elif word[0] == "-" and c in enabled:
                enabled.remove(c)
        p.write_text(" ".join(enabled))
        for child in p.parent.iterdir():
            if child.is_dir():
                (child / "cgroup.controllers").write_text(" ".join(enabled))
                for c in enabled:
                    for k, v in V2_FILES[c].items():
                        if not (child / k).exists() and k not in self.drop_files:
                            (child / k).write_text(v)

    def _devices(self, p: Path, allow: bool, line: str) -> None:
        """The kernel's devices.allow/deny semantics (exact-key removal, "a" resets)."""
        old = self.device_state(p.parent)
        st = devrules.V1State(old.default_allow, dict(old.exceptions))
        kind, _, rest = line.partition(" ")
        if kind == "a":
            st = devrules.V1State(default_allow=allow)
        else:
            nums, _, access = rest.partition(" ")
            mj, _, mn = nums.partition(":")
            key = (kind, -1 if mj == "*" else int(mj), -1 if mn == "*" else int(mn))
            cur = st.exceptions.get(key, "")
            if allow != st.default_allow:
                st.exceptions[key] = "".join(c for c in "rwm" if c in cur or c in access)
            else:
                left = "".join(c for c in "rwm" if c in cur and c not in access)
                if left:
                    st.exceptions[key] = left
                else:
                    st.exceptions.pop(key, None)
        self.dev_state[p.parent] = st
        if st.default_allow:
            text = "a *:* rwm\n"
        else:
            text = "".join(
                f"{t} {'*' if a == -1 else a}:{'*' if b == -1 else b} {acc}\n"
                for (t, a, b), acc in st.exceptions.items()
            )
        (p.parent / "devices.list").write_text(text)

    def device_state(self, d: str | Path) -> devrules.V1State:
        """What the kernel would enforce in the devices cgroup d (inherited from the parent)."""
        p = Path(d)
        while p not in self.dev_state:
            if p == self.root:
                return devrules.V1State(default_allow=True)
            p = p.parent
        return self.dev_state[p]

    def _kill(self, pid: int, sig: int) -> None:
        self.kills.append((pid, sig))


# --- tests of the fake and of host detection ----------------------------------------------


def test_detect_mode_on_each_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("v1", "hybrid", "v2"):
        sub = tmp_path / mode
        sub.mkdir()
        with monkeypatch.context() as mp:
            fake = FakeCgroupfs(sub, mp, mode)
            assert detect_mode(fake.host.root) == mode


def test_v1_mounts_only_under_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCgroupfs(tmp_path, monkeypatch, "hybrid")
    mounts = v1_mounts(fake.host)
    assert mounts["cpu"].mountpoint == str(fake.root / "cpu")
    assert mounts["name=systemd"].mountpoint == str(fake.root / "systemd")
    assert "hugetlb" not in mounts  # cgroup2 mounts are not v1 hierarchies
    assert all(not m.mountpoint.startswith("/elsewhere") for m in mounts.values())


def test_own_cgroups_reads_every_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCgroupfs(tmp_path, monkeypatch, "v1", own="/process_api/abc")
    own = own_cgroups(fake.host)
    assert own["memory"] == "/process_api/abc"
    assert own["name=systemd"] == "/process_api/abc"
    assert own[""] == "/"


def test_mountinfo_escapes_are_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mi").write_text(
        "1 0 0:1 / /sys/fs/cgroup/my\\040cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
    )
    mounts = v1_mounts(Host(root="/sys/fs/cgroup", mountinfo=str(tmp_path / "mi")))
    assert mounts["cpu"].mountpoint == "/sys/fs/cgroup/my cpu"
    assert mounts["cpu"] is mounts["cpuacct"]


def test_mounts_and_host_compare_by_value() -> None:
    m = V1Mount("/sys/fs/cgroup/cpu,cpuacct", "/", ("cpu", "cpuacct"))
    assert m == V1Mount("/sys/fs/cgroup/cpu,cpuacct", "/", ("cpu", "cpuacct"))
    assert m != V1Mount("/sys/fs/cgroup/cpu,cpuacct", "/x", ("cpu", "cpuacct"))
    assert len({m, V1Mount(m.mountpoint, m.root, m.controllers)}) == 1
    assert "cpu,cpuacct" in repr(m)
    assert Host() == Host(root="/sys/fs/cgroup")
    assert Host().mountinfo == "/proc/self/mountinfo"
    assert Host(root="/x") != Host()


# --- shared steps on a plain directory tree --------------------------------------------------


def test_make_path_creates_missing_parents_first(tmp_path: Path) -> None:
    top = str(tmp_path)
    assert common.make_path(top, f"{top}/a/b/c") == [f"{top}/a", f"{top}/a/b", f"{top}/a/b/c"]
    assert common.make_path(top, f"{top}/a/b/c") == []  # all there: nothing is ours
    assert common.make_path(top, f"{top}/a/d") == [f"{top}/a/d"]
    assert common.make_path(top, top) == []
    with pytest.raises(FailedPrecondition, match="outside its hierarchy"):
        common.make_path(top, "/elsewhere/x")


def test_make_path_names_the_directory_a_file_blocks(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("")
    with pytest.raises(SyscallError) as e:
        common.make_path(str(tmp_path), f"{tmp_path}/a/f/b/c")
    assert e.value.errno == errno.ENOTDIR and e.value.path == f"{tmp_path}/a/f/b"


def test_make_path_needs_its_top(tmp_path: Path) -> None:
    with pytest.raises(SyscallError) as e:
        common.make_path(f"{tmp_path}/gone", f"{tmp_path}/gone/a/b")
    assert e.value.errno == errno.ENOENT and e.value.path == f"{tmp_path}/gone/a"


def test_remove_tree_removes_nested_cgroups(tmp_path: Path) -> None:
    (tmp_path / "ctr/x/y").mkdir(parents=True)
    (tmp_path / "ctr/z").mkdir()
    common.remove_tree(str(tmp_path / "ctr"))
    assert not (tmp_path / "ctr").exists()
    common.remove_tree(str(tmp_path / "ctr"))  # gone already: fine


def test_hugepage_sizes_come_from_file_names(tmp_path: Path) -> None:
    for name in (
        "hugetlb.2MB.max",
        "hugetlb.1GB.rsvd.max",
        "hugetlb.64KB.current",
        "hugetlb.2MB",  # no file of a size ends there
        "hugetlb.2mb.max",
        "hugetlb.xMB.max",
        "memory.max",
    ):
        (tmp_path / name).write_text("")
    assert stats._hugepage_sizes(str(tmp_path)) == ["1GB", "2MB", "64KB"]
    assert stats._hugepage_sizes(str(tmp_path / "gone")) == []
