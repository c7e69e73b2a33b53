"""Mount options, spec validation, mountinfo, devices and the rootfs mount plan (no root needed)."""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kettle import syscalls as sc
from kettle.cgroups.host import V1Mount
from kettle.errors import (
    FailedPrecondition,
    InvalidArgument,
    KettleError,
    SyscallError,
    Unimplemented,
)
from kettle.runtime import devices, mounts, rootfs, safepath
from kettle.runtime.mounts import MountOptions, parse_options

# --- parse_options -----------------------------------------------------------------------------

FLAG_TABLE = [
    ("ro", sc.MS_RDONLY, 0),
    ("rw", 0, sc.MS_RDONLY),
    ("nosuid", sc.MS_NOSUID, 0),
    ("suid", 0, sc.MS_NOSUID),
    ("nodev", sc.MS_NODEV, 0),
    ("dev", 0, sc.MS_NODEV),
    ("noexec", sc.MS_NOEXEC, 0),
    ("exec", 0, sc.MS_NOEXEC),
    ("sync", sc.MS_SYNCHRONOUS, 0),
    ("async", 0, sc.MS_SYNCHRONOUS),
    ("dirsync", sc.MS_DIRSYNC, 0),
    ("remount", sc.MS_REMOUNT, 0),
    ("mand", sc.MS_MANDLOCK, 0),
    ("nomand", 0, sc.MS_MANDLOCK),
    ("noatime", sc.MS_NOATIME, 0),
    ("atime", 0, sc.MS_NOATIME),
    ("nodiratime", sc.MS_NODIRATIME, 0),
    ("diratime", 0, sc.MS_NODIRATIME),
    ("relatime", sc.MS_RELATIME, 0),
    ("norelatime", 0, sc.MS_RELATIME),
    ("strictatime", sc.MS_STRICTATIME, 0),
    ("nostrictatime", 0, sc.MS_STRICTATIME),
    ("bind", sc.MS_BIND, 0),
    ("rbind", sc.MS_BIND | sc.MS_REC, 0),
    ("nosymfollow", sc.MS_NOSYMFOLLOW, 0),
    ("lazytime", sc.MS_LAZYTIME, 0),
    ("nolazytime", 0, sc.MS_LAZYTIME),
    ("silent", sc.MS_SILENT, 0),
    ("loud", 0, sc.MS_SILENT),
    ("acl", mounts.MS_POSIXACL, 0),
    ("iversion", mounts.MS_I_VERSION, 0),
    ("defaults", 0, 0),
]


@pytest.mark.parametrize(("opt", "flags", "clear"), FLAG_TABLE)
def test_flag_options(opt: str, flags: int, clear: int) -> None:
    got = parse_options([opt], "mounts[0].options")
    assert (got.flags, got.clear_flags, got.data) == (flags, clear, "")
    assert opt in mounts.KNOWN_OPTIONS


@pytest.mark.parametrize(
    ("opt", "flag"),
    [
        ("private", sc.MS_PRIVATE),
        ("rprivate", sc.MS_PRIVATE | sc.MS_REC),
        ("shared", sc.MS_SHARED),
        ("rshared", sc.MS_SHARED | sc.MS_REC),
        ("slave", sc.MS_SLAVE),
        ("rslave", sc.MS_SLAVE | sc.MS_REC),
        ("unbindable", sc.MS_UNBINDABLE),
        ("runbindable", sc.MS_UNBINDABLE | sc.MS_REC),
    ],
)
def test_propagation_options(opt: str, flag: int) -> None:
    got = parse_options([opt], "f")
    assert got.propagation == [flag] and got.flags == 0
    assert mounts.propagation_flag(opt) == flag


def test_last_option_wins_and_order_kept() -> None:
    assert parse_options(["ro", "rw"], "f").flags == 0
    assert parse_options(["rw", "ro"], "f").flags == sc.MS_RDONLY
    assert parse_options(["rw", "ro"], "f").clear_flags == 0
    got = parse_options(["rbind", "rprivate", "shared"], "f")
    assert got.propagation == [sc.MS_PRIVATE | sc.MS_REC, sc.MS_SHARED]


def test_unknown_options_are_data() -> None:
    got = parse_options(["nosuid", "mode=755", "size=65536k", "newinstance"], "f")
    assert got.flags == sc.MS_NOSUID
    assert got.data == "mode=755,size=65536k,newinstance"


@pytest.mark.parametrize(
    ("opt", "attr_set", "attr_clr"),
    [
        ("rro", mounts.MOUNT_ATTR_RDONLY, 0),
        ("rrw", 0, mounts.MOUNT_ATTR_RDONLY),
        ("rnosuid", mounts.MOUNT_ATTR_NOSUID, 0),
        ("rsuid", 0, mounts.MOUNT_ATTR_NOSUID),
        ("rnodev", mounts.MOUNT_ATTR_NODEV, 0),
        ("rnoexec", mounts.MOUNT_ATTR_NOEXEC, 0),
        ("rnoatime", mounts.MOUNT_ATTR_NOATIME, mounts.MOUNT_ATTR__ATIME),
        ("rstrictatime", mounts.MOUNT_ATTR_STRICTATIME, mounts.MOUNT_ATTR__ATIME),
        ("rrelatime", 0, mounts.MOUNT_ATTR__ATIME),
        ("ratime", 0, mounts.MOUNT_ATTR_NOATIME),
        ("rnodiratime", mounts.MOUNT_ATTR_NODIRATIME, 0),
        ("rnosymfollow", mounts.MOUNT_ATTR_NOSYMFOLLOW, 0),
    ],
)
def test_recursive_attributes(opt: str, attr_set: int, attr_clr: int) -> None:
    got = parse_options([opt], "f")
    assert (got.rec_attr_set, got.rec_attr_clr, got.flags, got.data) == (
        attr_set,
        attr_clr,
        0,
        "",
    )
    assert got.has_rec_attrs


def test_tmpcopyup() -> None:
    assert parse_options(["tmpcopyup"], "f").tmpcopyup
    assert not parse_options(["tmpcopyup", "notmpcopyup"], "f").tmpcopyup


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ("ro", InvalidArgument, "mounts[3].options: must be a list"),
        ([1], InvalidArgument, "mounts[3].options[0]: must be a string"),
        (["ro", ""], InvalidArgument, "mounts[3].options[1]: empty option"),
        (["a\0b"], InvalidArgument, "NUL"),
        (["idmap"], Unimplemented, "mounts[3].options[0]: idmap"),
        (["ridmap"], Unimplemented, "idmapped"),
    ],
)
def test_bad_options(options: Any, error: type[KettleError], text: str) -> None:
    with pytest.raises(error) as info:
        parse_options(options, "mounts[3].options")
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("options", "remount"),
    [
        (["bind"], False),
        (["rbind"], False),
        (["rbind", "rprivate"], False),
        (["bind", "ro"], True),
        (["rbind", "nosuid"], True),
        (["ro"], False),  # not a bind: flags go to mount(2) directly
    ],
)
def test_needs_remount(options: list[str], remount: bool) -> None:
    assert parse_options(options, "f").needs_remount is remount


def test_option_properties() -> None:
    o = parse_options(["rbind", "ro"], "f")
    assert o.bind and o.rbind and o.readonly and o.ro_remount
    assert not parse_options(["bind"], "f").rbind
    assert parse_options(["noatime"], "f").sets_atime
    assert parse_options(["atime"], "f").sets_atime
    assert not parse_options(["ro", "nosuid"], "f").sets_atime


RUNC_OPTIONS = (
    "ro rw suid nosuid dev nodev exec noexec sync async dirsync remount mand nomand atime noatime"
    " diratime nodiratime relatime norelatime strictatime nostrictatime bind rbind private"
    " rprivate shared rshared slave rslave unbindable runbindable tmpcopyup nosymfollow lazytime"
    " rro rrw"
)


def test_known_options_cover_runc() -> None:
    for name in RUNC_OPTIONS.split():
        assert name in mounts.KNOWN_OPTIONS, name
    assert "size=1k" not in mounts.KNOWN_OPTIONS


# --- parse_mount / validate --------------------------------------------------------------------


def runc_default_spec() -> dict[str, Any]:
    """runc spec's mounts and paths."""
    return {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": True},
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
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
            {"destination": "/proc/cpuinfo", "source": "/x/cpuinfo", "options": ["bind"]},
        ],
        "linux": {
            "rootfsPropagation": "rslave",
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/sys"],
            "devices": [
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
                {"path": "/dev/pipe", "type": "p"},
            ],
        },
    }


def test_default_spec_is_valid() -> None:
    mounts.validate(runc_default_spec())
    mounts.validate({})


def with_change(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(runc_default_spec())
    node: Any = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "text"),
    [
        ("mounts", "x", "mounts: must be a list"),
        ("mounts.1", "x", "mounts[1]: must be an object"),
        ("mounts.2.destination", "dev/pts", "mounts[2].destination: must be absolute"),
        ("mounts.2.destination", None, "mounts[2].destination: required"),
        ("mounts.2.destination", "/a/../", "mounts[2].destination: cannot mount over the root"),
        ("mounts.0.type", None, "mounts[0].type: required unless options include bind"),
        ("mounts.0.type", 3, "mounts[0].type: must be a string"),
        ("mounts.7.source", None, "mounts[7].source: a bind mount needs a source"),
        ("mounts.7.destination", "/proc/sys/x", "mounts[7].destination: /proc/sys/x cannot be"),
        ("mounts.1.destination", "/proc", "mounts[1].destination: /proc cannot be mounted"),
        ("mounts.4.destination", "/proc/../proc/self", "inside /proc"),
        ("mounts.4.options", ["ro", 5], "mounts[4].options[1]: must be a string"),
        ("mounts.7.options", ["bind", "tmpcopyup"], "mounts[7].options: tmpcopyup is only"),
        ("linux.rootfsPropagation", "sideways", "linux.rootfsPropagation: unsupported"),
        ("linux.rootfsPropagation", 1, "linux.rootfsPropagation: unsupported"),
        ("linux.maskedPaths", ["proc/kcore"], "linux.maskedPaths[0]: must be an absolute"),
        ("linux.readonlyPaths", "/proc/sys", "linux.readonlyPaths: must be a list"),
        ("linux.devices.0.type", "x", "linux.devices[0].type: must be one of"),
        ("linux.devices.0.path", "dev/fuse", "linux.devices[0].path: must be an absolute"),
        ("linux.devices.0.path", "/dev", "linux.devices[0].path: '/dev' cannot be"),
        ("linux.devices.0.major", -1, "linux.devices[0].major: must be an integer"),
        ("linux.devices.0.major", True, "linux.devices[0].major: must be an integer"),
        ("linux.devices.0.minor", None, "linux.devices[0]: a c device needs major and minor"),
        ("linux.devices.0.minor", 1 << 20, "linux.devices[0].minor"),
        ("linux.devices.0.fileMode", "0666", "linux.devices[0].fileMode"),
        ("linux.devices.0.uid", -5, "linux.devices[0].uid"),
        ("linux.devices.1", "x", "linux.devices[1]: must be an object"),
        ("linux", [], "linux: must be an object"),
        ("root.readonly", "yes", "root.readonly: must be a boolean"),
    ],
)
def test_validate_names_the_field(path: str, value: Any, text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        mounts.validate(with_change(path, value))
    assert text in str(info.value)


def test_recursive_attributes_need_mount_setattr(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = with_change("mounts.7.options", ["rbind", "rro"])
    monkeypatch.delattr(sc, "mount_setattr", raising=False)
    with pytest.raises(Unimplemented) as info:
        mounts.validate(spec)
    assert "mounts[7].options" in str(info.value)
    monkeypatch.setattr(sc, "mount_setattr", lambda *a: None, raising=False)
    mounts.validate(spec)


def test_parse_mount_cleans_and_types() -> None:
    m = mounts.parse_mount({"destination": "/a/./b/../c/", "type": "bind", "source": "/s"}, 4)
    assert m.destination == "/a/c" and m.is_bind and m.type is None
    assert m.field == "mounts[4]"
    assert not m.options.rbind
    m = mounts.parse_mount({"destination": "//x", "type": "tmpfs"}, 0)
    assert m.destination == "/x" and m.type == "tmpfs" and not m.is_bind
    m = mounts.parse_mount({"destination": "/x", "options": ["remount", "ro"]}, 0)
    assert m.type is None and m.options.readonly


@pytest.mark.parametrize(
    ("dest", "fstype", "bind", "ok"),
    [
        ("/proc", "proc", False, True),
        ("/proc", "tmpfs", False, False),
        ("/proc", None, True, True),  # a bind's source is checked when it is mounted
        ("/proc/cpuinfo", None, True, True),
        ("/proc/sys/kernel/ns_last_pid", None, True, True),
        ("/proc/sys", "tmpfs", False, False),
        ("/proc/self/attr", None, True, False),
        ("/procfoo", "tmpfs", False, True),
        ("/etc/proc", "tmpfs", False, True),
    ],
)
def test_proc_rule(dest: str, fstype: str | None, bind: bool, ok: bool) -> None:
    assert (mounts.proc_mount_problem(dest, fstype, bind=bind) is None) is ok


# --- mountinfo and flags -----------------------------------------------------------------------

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 27 0:28 / /sys/fs/cgroup rw,relatime master:3 - tmpfs tmpfs rw,mode=755
50 27 0:40 /sub /mnt/with\\040space rw,nosuid shared:7 master:2 - tmpfs none\\011x rw
51 50 0:41 / /mnt/with\\040space/inner ro - tmpfs t rw
52 50 0:42 / /mnt/with\\040space rw - tmpfs t rw
"""


def test_parse_mountinfo() -> None:
    infos = mounts.parse_mountinfo(MOUNTINFO + "garbage line\n")
    assert len(infos) == 6
    proc = infos[0]
    assert (proc.mount_id, proc.parent_id, proc.dev, proc.fstype) == (22, 27, "0:21", "proc")
    assert proc.optional == () and not proc.shared
    odd = infos[3]
    assert odd.mountpoint == "/mnt/with space" and odd.root == "/sub"
    assert odd.source == "none\tx" and odd.options == "rw,nosuid"
    assert odd.optional == ("shared:7", "master:2") and odd.shared
    assert infos[1].shared and not infos[2].shared


def test_mount_of_takes_longest_then_topmost() -> None:
    infos = mounts.parse_mountinfo(MOUNTINFO)
    assert mounts.mount_of(infos, "/etc") is infos[1]
    assert mounts.mount_of(infos, "/") is infos[1]
    assert mounts.mount_of(infos, "/mnt/with space/x") is infos[5]  # 52 covers 50
    assert mounts.mount_of(infos, "/mnt/with space/inner/y") is infos[4]
    assert mounts.mount_of(infos, "/procx") is infos[1]
    assert mounts.mount_of([], "/x") is None


def test_unescape() -> None:
    assert mounts.unescape("a\\040b\\134c\\012") == "a b\\c\n"
    assert mounts.unescape("plain\\") == "plain\\"
    assert mounts.unescape("\\09x") == "\\09x"


@pytest.mark.parametrize(
    ("f_flag", "expected"),
    [
        (os.ST_RELATIME, sc.MS_RELATIME),
        (0, sc.MS_STRICTATIME),
        (os.ST_NOATIME | os.ST_RELATIME, sc.MS_NOATIME),
        (
            os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_RELATIME,
            sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME,
        ),
        (os.ST_NODIRATIME | os.ST_RELATIME, sc.MS_NODIRATIME | sc.MS_RELATIME),
    ],
)
def test_flags_from_statvfs(f_flag: int, expected: int) -> None:
    assert mounts.flags_from_statvfs(f_flag) == expected


def test_keep_locked() -> None:
    host = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOATIME
    wanted = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    got = mounts.keep_locked(wanted, host, sets_atime=False)
    assert got == wanted | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOATIME
    # an explicit atime choice is the user's: not overridden
    got = mounts.keep_locked(wanted | sc.MS_STRICTATIME, host, sets_atime=True)
    assert got == wanted | sc.MS_STRICTATIME | sc.MS_NOSUID | sc.MS_NODEV


# --- devices -----------------------------------------------------------------------------------


def test_parse_devices_defaults_and_masking() -> None:
    devs = devices.parse_devices(
        [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
            {"path": "/dev/sda1", "type": "b", "major": 8, "minor": 1, "fileMode": 0o060640},
            {"path": "/dev//fifo", "type": "p", "uid": 5, "gid": 6},
            {"path": "/dev/kmsg", "type": "u", "major": 1, "minor": 11, "fileMode": 0o600},
        ]
    )
    fuse, sda, fifo, kmsg = devs
    assert (fuse.file_mode, fuse.uid, fuse.gid, fuse.rdev) == (0o666, 0, 0, os.makedev(10, 229))
    assert sda.file_mode == 0o640 and stat.S_ISBLK(sda.mode)
    assert fifo.path == "/dev/fifo" and stat.S_ISFIFO(fifo.mode) and fifo.rdev == 0
    assert (fifo.uid, fifo.gid) == (5, 6)
    assert stat.S_ISCHR(kmsg.mode) and kmsg.mode & 0o7777 == 0o600
    assert devices.parse_devices(None) == []


def test_with_defaults_lets_the_spec_override() -> None:
    mine = devices.Device("/dev/null", "c", 1, 3, 0o600)
    extra = devices.Device("/dev/fuse", "c", 10, 229)
    out = devices.with_defaults([extra, mine])
    paths = [d.path for d in out]
    assert paths == [d.path for d in devices.DEFAULT_DEVICES] + ["/dev/fuse"]
    assert out[0] is mine
    for d in out[1:6]:
        assert d.file_mode == 0o666 and d.type == "c"


# --- cgroup v1 layout --------------------------------------------------------------------------

V1 = {
    "cpu": V1Mount("/sys/fs/cgroup/cpu,cpuacct", "/", ("cpu", "cpuacct")),
    "cpuacct": V1Mount("/sys/fs/cgroup/cpu,cpuacct", "/", ("cpu", "cpuacct")),
    "memory": V1Mount("/sys/fs/cgroup/memory", "/", ("memory",)),
    "name=systemd": V1Mount("/sys/fs/cgroup/systemd", "/", ("name=systemd",)),
    "pids": V1Mount("/sys/fs/cgroup/pids", "/kettle", ("pids",)),
}
OWN = {
    "cpu": "/kettle/c1",
    "cpuacct": "/kettle/c1",
    "memory": "/",
    "name=systemd": "/kettle/c1",
    "pids": "/kettle/c1",
    "": "/",
}


def test_v1_layout_binds_own_cgroups() -> None:
    dirs, links = rootfs.v1_layout(V1, OWN)
    assert [(d.name, d.data, d.source) for d in dirs] == [
        ("cpu,cpuacct", "cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/kettle/c1"),
        ("memory", "memory", "/sys/fs/cgroup/memory"),
        ("systemd", "name=systemd", "/sys/fs/cgroup/systemd/kettle/c1"),
        ("pids", "pids", "/sys/fs/cgroup/pids/c1"),
    ]
    assert links == [("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")]


def test_v1_layout_in_cgroup_namespace_needs_no_sources() -> None:
    dirs, _ = rootfs.v1_layout(V1, None)
    assert all(d.source == "" for d in dirs)


def test_v1_layout_refuses_what_it_cannot_see() -> None:
    with pytest.raises(FailedPrecondition) as info:
        rootfs.v1_layout(V1, {k: v for k, v in OWN.items() if k != "memory"})
    assert "/sys/fs/cgroup/memory" in str(info.value)
    with pytest.raises(FailedPrecondition) as info:
        rootfs.v1_layout(V1, {**OWN, "pids": "/other/c1"})
    assert "not below" in str(info.value)


def test_dev_kind() -> None:
    parse = mounts.parse_mounts
    assert rootfs.dev_kind(parse(runc_default_spec())) == "own"
    assert rootfs.dev_kind([]) == "none"
    bound = {"mounts": [{"destination": "/dev/", "source": "/dev", "options": ["rbind"]}]}
    assert rootfs.dev_kind(parse(bound)) == "bind"


# --- prepare() with recorded mounts ------------------------------------------------------------


class Recorder:
    """Stands in for mount(2): records each call with the path a /proc/self/fd target names."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str, str | None, int, str | None]] = []

    def __call__(
        self,
        source: str | None,
        target: str,
        fstype: str | None = None,
        flags: int = 0,
        data: str | None = None,
        *,
        shown: str | None = None,
    ) -> None:
        if target.startswith("/proc/self/fd/"):
            target = os.readlink(target)
        if source and source.startswith("/proc/self/fd/"):
            source = os.readlink(source)
        self.calls.append((source, target, fstype, flags, data))

    def targets(self) -> list[str]:
        return [c[1] for c in self.calls]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    monkeypatch.setattr(sc, "mount", rec)
    yield rec


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for d in ("proc", "etc", "tmp"):
        (root / d).mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "srcfile").write_text("x")
    return tmp_path


def test_prepare_mounts_onto_resolved_targets_inside(recorded: Recorder, image: Path) -> None:
    root = image / "rootfs"
    (root / "etc" / "x").symlink_to(image / "outside")  # an image link to a host directory
    (root / "tmp" / "up").symlink_to("../../..")
    spec = {
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]},
            {"destination": "/etc/x/data", "source": str(image / "src"), "options": ["rbind"]},
            {
                "destination": "/tmp/up/tmp/up/hosts",
                "source": str(image / "srcfile"),
                "options": ["bind", "ro", "nosuid", "rprivate"],
            },
        ]
    }
    rootfs.prepare(spec, str(root), userns=True, rootless=False)
    calls = recorded.calls
    assert calls[0] == (None, "/", None, sc.MS_SLAVE | sc.MS_REC, None)
    assert calls[1] == (str(root), str(root), None, sc.MS_BIND | sc.MS_REC, None)
    assert calls[2] == ("proc", str(root / "proc"), "proc", 0, None)
    # ro is delayed for tmpfs; a new directory gets tmpfs's own mode
    assert calls[3] == ("tmpfs", str(root / "run"), "tmpfs", 0, None)
    inside = root / str(image / "outside").lstrip("/") / "data"
    assert calls[4] == (str(image / "src"), str(inside), None, sc.MS_BIND | sc.MS_REC, None)
    assert inside.is_dir() and not (image / "outside" / "data").exists()
    assert calls[5] == (str(image / "srcfile"), str(root / "hosts"), None, sc.MS_BIND, None)
    assert (root / "hosts").is_file()
    remount = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID
    assert calls[6] == (None, str(root / "hosts"), None, remount, None)
    assert calls[7] == (None, str(root / "hosts"), None, sc.MS_PRIVATE | sc.MS_REC, None)
    assert len(calls) == 8  # no /dev mount: no devices, no links
    for target in recorded.targets():
        assert target == "/" or target.startswith(str(root))


@pytest.mark.parametrize(
    ("propagation", "first"),
    [
        (None, sc.MS_SLAVE | sc.MS_REC),
        ("rshared", sc.MS_SHARED | sc.MS_REC),
        ("private", sc.MS_PRIVATE),
        # an unbindable "/" could not be bound onto itself: finalize() applies it at the end
        ("runbindable", sc.MS_SLAVE | sc.MS_REC),
    ],
)
def test_prepare_root_propagation(
    recorded: Recorder, image: Path, propagation: str | None, first: int
) -> None:
    spec: dict[str, Any] = {"linux": {"rootfsPropagation": propagation}}
    rootfs.prepare(spec, str(image / "rootfs"), userns=False, rootless=False)
    assert recorded.calls[0] == (None, "/", None, first, None)


@pytest.mark.parametrize(
    ("propagation", "reads"),
    [
        # a recursive slave or private "/" leaves nothing shared: mountinfo is not read
        (None, False),
        ("rslave", False),
        ("rprivate", False),
        ("runbindable", False),
        ("private", True),
        ("slave", True),
        ("rshared", True),
    ],
)
def test_prepare_makes_a_shared_parent_private(
    recorded: Recorder,
    image: Path,
    monkeypatch: pytest.MonkeyPatch,
    propagation: str | None,
    reads: bool,
) -> None:
    read: list[int] = []

    def fake_mountinfo() -> list[mounts.MountInfo]:
        read.append(1)
        return mounts.parse_mountinfo(f"30 1 0:50 / {image} rw shared:9 - tmpfs t rw\n")

    monkeypatch.setattr(rootfs, "read_mountinfo", fake_mountinfo)
    spec: dict[str, Any] = {"linux": {"rootfsPropagation": propagation}}
    rootfs.prepare(spec, str(image / "rootfs"), userns=False, rootless=False)
    assert bool(read) == reads
    private = (None, str(image), None, sc.MS_PRIVATE, None)
    assert (private in recorded.calls) == reads


def test_create_devices_resolves_each_parent_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "rootfs"
    (root / "dev").mkdir(parents=True)
    resolved: list[str] = []
    real = safepath.mkdir_all_in_root

    def counting(root_fd: int, path: str, *args: Any, **kwargs: Any) -> int:
        resolved.append(path)
        return real(root_fd, path, *args, **kwargs)

    monkeypatch.setattr(safepath, "mkdir_all_in_root", counting)
    names = ("a", "sub/b", "c", "sub/d")
    ids = {"uid": os.getuid(), "gid": os.getgid()}
    devs = devices.parse_devices([{"path": f"/dev/{n}", "type": "p", **ids} for n in names])
    fds_before = len(os.listdir("/proc/self/fd"))
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        devices.create_devices(root_fd, devs, bind=False)
    finally:
        os.close(root_fd)
    assert resolved == ["/dev", "/dev/sub"]
    assert all(stat.S_ISFIFO((root / "dev" / n).lstat().st_mode) for n in names)
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_value_classes_compare_by_value() -> None:
    a = mounts.parse_mount({"destination": "/x", "type": "tmpfs", "options": ["ro"]}, 1)
    b = mounts.parse_mount({"destination": "/x/", "type": "tmpfs", "options": ["ro"]}, 1)
    assert a == b and a != mounts.parse_mount({"destination": "/y", "type": "tmpfs"}, 1)
    assert "destination='/x'" in repr(a) and "MountOptions(flags=1" in repr(a)
    assert a.options.replace(data="size=1m") == MountOptions(flags=sc.MS_RDONLY, data="size=1m")
    assert a.options.replace(flags=0).flags == 0 and a.options.flags == sc.MS_RDONLY
    info = mounts.parse_mountinfo(MOUNTINFO)
    assert info == mounts.parse_mountinfo(MOUNTINFO) and len(set(info)) == len(info)
    null = devices.Device("/dev/null", "c", 1, 3)
    assert null == devices.DEFAULT_DEVICES[0] and hash(null) == hash(devices.DEFAULT_DEVICES[0])


def test_bind_error_names_the_source(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(source: Any, target: str, *args: Any, **kwargs: Any) -> None:
        if target.startswith("/proc/self/fd/"):
            raise SyscallError("mount", 20, kwargs.get("shown"), f"source {source}")

    monkeypatch.setattr(sc, "mount", failing)
    spec = {"mounts": [{"destination": "/x", "source": str(image / "src"), "options": ["bind"]}]}
    with pytest.raises(SyscallError) as info:
        rootfs.prepare(spec, str(image / "rootfs"), userns=False, rootless=False)
    text = str(info.value)
    assert f"bind of {image / 'src'}" in text and str(image / "rootfs/x") in text
    assert "/proc/self/fd" not in text


def test_prepare_keeps_existing_directory_mode_for_tmpfs(recorded: Recorder, image: Path) -> None:
    root = image / "rootfs"
    os.chmod(root / "tmp", 0o1777)
    spec = {
        "mounts": [
            {"destination": "/tmp", "type": "tmpfs", "source": "t", "options": ["size=1m"]},
        ]
    }
    rootfs.prepare(spec, str(root), userns=False, rootless=False)
    assert recorded.calls[-1] == ("t", str(root / "tmp"), "tmpfs", 0, "mode=1777,size=1m")


@pytest.mark.parametrize(
    ("dest", "setup", "text"),
    [
        ("/data", lambda r: (r / "data").symlink_to("/proc/sys"), "inside /proc"),
        ("/proc", lambda r: ((r / "proc").rmdir(), (r / "proc").symlink_to("/etc")), "ordinary"),
        ("/up", lambda r: (r / "up").symlink_to("../.."), "resolves to the root"),
    ],
)
def test_prepare_refuses_proc_tricks(
    recorded: Recorder, image: Path, dest: str, setup: Any, text: str
) -> None:
    root = image / "rootfs"
    setup(root)
    kind = "proc" if dest == "/proc" else "tmpfs"
    spec = {"mounts": [{"destination": dest, "type": kind, "source": kind}]}
    with pytest.raises(FailedPrecondition) as info:
        rootfs.prepare(spec, str(root), userns=False, rootless=False)
    assert text in str(info.value) and "mounts[0]" in str(info.value)
    assert all(not t.startswith(str(root) + "/") for t in recorded.targets())


def test_prepare_fills_dev_in_a_user_namespace(recorded: Recorder, image: Path) -> None:
    root = image / "rootfs"
    spec = {
        "mounts": [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}],
        "linux": {
            "devices": [
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200},
                {
                    "path": "/dev/fifo",
                    "type": "p",
                    "fileMode": 0o640,
                    "uid": os.getuid(),
                    "gid": os.getgid(),
                },
            ]
        },
    }
    rootfs.prepare(spec, str(root), userns=True, rootless=False)
    dev = root / "dev"
    binds = {c[0]: c[1] for c in recorded.calls if c[3] == sc.MS_BIND}
    for name in ("null", "zero", "full", "random", "urandom", "tty", "fuse", "net/tun"):
        assert binds[f"/dev/{name}"] == str(dev / name)
        assert (dev / name).is_file()  # the empty file the host node is bound onto
    assert stat.S_ISFIFO((dev / "fifo").lstat().st_mode)
    fifo = (dev / "fifo").lstat()
    assert stat.S_IMODE(fifo.st_mode) == 0o640
    assert (fifo.st_uid, fifo.st_gid) == (os.getuid(), os.getgid())
    assert os.readlink(dev / "fd") == "/proc/self/fd"
    assert os.readlink(dev / "stdin") == "/proc/self/fd/0"
    assert os.readlink(dev / "stderr") == "/proc/self/fd/2"
    assert os.readlink(dev / "ptmx") == "pts/ptmx"
    assert (dev / "core").is_symlink() == os.path.exists("/proc/kcore")


def test_bind_console_creates_the_file(recorded: Recorder, image: Path) -> None:
    root = image / "rootfs"
    (root / "dev").mkdir()
    rootfs.bind_console(str(root), "/dev/null")
    console = root / "dev" / "console"
    assert stat.S_IMODE(console.stat().st_mode) == 0o666
    assert recorded.calls == [("/dev/null", str(console), None, sc.MS_BIND, None)]


def test_tmpfs_copyup_plan_is_refused_for_bind() -> None:
    spec = {"mounts": [{"destination": "/x", "source": "/y", "options": ["bind", "tmpcopyup"]}]}
    with pytest.raises(InvalidArgument):
        mounts.validate(spec)


def test_mount_options_default() -> None:
    assert MountOptions() == parse_options(None, "f")
    assert safepath.MAX_SYMLINKS == 40
