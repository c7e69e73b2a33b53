"""Root filesystem and mounts: readonly root, tmpfs options, binds, masked and readonly paths,
devices, and mount targets that try to leave the rootfs through symlinks."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from tests.support import leaks
from tests.support.containers import Containers
from tests.support.probe import mount_points, run_probe
from tests.support.runtime import Runtime

pytestmark = pytest.mark.privileged


@pytest.mark.parametrize("readonly", [True, False])
def test_readonly_root(containers: Containers, readonly: bool) -> None:
    bundle = containers.bundle()
    bundle.config["root"]["readonly"] = readonly
    result = run_probe(containers, bundle, "try", "write", "/written-by-probe")
    if readonly:
        assert result["errno"] == errno.EROFS
        assert not (bundle.rootfs / "written-by-probe").exists()
    else:
        assert result["ok"] is True
        assert (bundle.rootfs / "written-by-probe").read_text() == "x"


def test_root_is_pivoted(containers: Containers) -> None:
    bundle = containers.bundle()
    report = run_probe(containers, bundle)
    mounts = mount_points(report)
    assert "/" in mounts
    # Every mount point is a container path: none names the bundle on the host.
    assert not any(point.startswith(str(bundle.path)) for point in mounts)


def test_tmpfs_size_and_mode(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.add_mount("/scratch", "tmpfs", "tmpfs", ["nosuid", "nodev", "size=1m", "mode=0700"])
    report = run_probe(containers, bundle)
    opts, fstype, super_opts = mount_points(report)["/scratch"]
    assert fstype == "tmpfs"
    assert "size=1024k" in super_opts
    assert "mode=700" in super_opts
    assert {"nosuid", "nodev"} <= set(opts.split(","))


def test_tmpfs_mode_seen_by_stat(containers: Containers) -> None:
    bundle = containers.bundle("/bin/stat", "-c", "%a", "/scratch")
    bundle.add_mount("/scratch", "tmpfs", "tmpfs", ["mode=0710"])
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "710"


def test_readonly_bind_mount(containers: Containers, tmp_path: Path) -> None:
    shared = Path(containers.bundles.base) / f"shared-{uuid.uuid4().hex[:8]}"
    shared.mkdir()
    (shared / "file").write_text("from the host\n")
    try:
        bundle = containers.bundle("/bin/sh", "-c", "cat /data/file; /bin/probe try write /data/x")
        bundle.add_mount("/data", "bind", str(shared), ["rbind", "ro"])
        result = containers.run(bundle)
        assert result.returncode == 0, result.describe()
        assert result.stdout.startswith("from the host\n")
        assert f'"errno":{errno.EROFS}' in result.stdout
        assert not (shared / "x").exists()
        assert leaks.mounts_naming(str(shared)) == []
    finally:
        (shared / "file").unlink()
        shared.rmdir()


def test_writable_bind_mount(containers: Containers) -> None:
    shared = Path(containers.bundles.base) / f"shared-{uuid.uuid4().hex[:8]}"
    shared.mkdir()
    try:
        bundle = containers.bundle("/bin/sh", "-c", "echo hi > /data/out")
        bundle.add_mount("/data", "none", str(shared), ["bind"])
        result = containers.run(bundle)
        assert result.returncode == 0, result.describe()
        assert (shared / "out").read_text() == "hi\n"
    finally:
        for f in shared.iterdir():
            f.unlink()
        shared.rmdir()


def test_bind_of_file(containers: Containers) -> None:
    source = Path(containers.bundles.base) / f"file-{uuid.uuid4().hex[:8]}"
    source.write_text("single file\n")
    try:
        bundle = containers.bundle("/bin/cat", "/etc/kettle-file")
        bundle.add_mount("/etc/kettle-file", "bind", str(source), ["bind", "ro"])
        result = containers.run(bundle)
        assert result.stdout == "single file\n", result.describe()
    finally:
        source.unlink()


def test_masked_paths(containers: Containers) -> None:
    # Mask whichever of the default masked files this kernel has, and /sys/firmware (a dir).
    masked_file = next(
        p for p in ("/proc/kcore", "/proc/timer_list", "/proc/keys") if Path(p).exists()
    )
    assert any(Path("/sys/firmware").iterdir())
    script = f"wc -c < {masked_file}; ls -A /sys/firmware | wc -l; touch /sys/firmware/x"
    bundle = containers.bundle("/bin/sh", "-c", script)
    result = containers.run(bundle)
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "0", result.describe()  # /dev/null over a file
    assert lines[1].strip() == "0", result.describe()  # empty read-only tmpfs over a directory
    assert result.returncode != 0  # touch failed: the mask is read-only


def test_readonly_paths(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.linux["readonlyPaths"] = ["/proc/sys"]
    result = run_probe(containers, bundle, "try", "open", "/proc/sys/kernel/hostname", "w")
    assert result["errno"] == errno.EROFS


def test_custom_masked_path(containers: Containers) -> None:
    bundle = containers.bundle("/bin/cat", "/etc/hosts")
    bundle.linux["maskedPaths"] = ["/etc/hosts"]
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout == ""


def test_default_devices_and_links(containers: Containers) -> None:
    script = (
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T' /dev/$d; done;"
        "for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done;"
        "head -c 4 /dev/zero | wc -c"
    )
    result = containers.run(containers.bundle("/bin/sh", "-c", script))
    assert result.returncode == 0, result.describe()
    lines = result.stdout.splitlines()
    expected = {
        "null": "1:3",
        "zero": "1:5",
        "full": "1:7",
        "random": "1:8",
        "urandom": "1:9",
        "tty": "5:0",
    }
    for line, (name, numbers) in zip(lines[:6], expected.items(), strict=True):
        assert line == f"/dev/{name} character special file {numbers}"
    assert lines[6:11] == [
        "/proc/self/fd",
        "/proc/self/fd/0",
        "/proc/self/fd/1",
        "/proc/self/fd/2",
        "pts/ptmx",
    ]
    assert lines[11].strip() == "4"


def test_linux_devices_creates_node(containers: Containers) -> None:
    bundle = containers.bundle("/bin/stat", "-c", "%F %t:%T %a %u:%g", "/dev/kettle-fuse")
    bundle.linux["devices"] = [
        {
            "path": "/dev/kettle-fuse",
            "type": "c",
            "major": 10,
            "minor": 229,
            "fileMode": 0o640,
            "uid": 0,
            "gid": 5,
        }
    ]
    bundle.linux["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"}
    )
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == "character special file a:e5 640 0:5"


def test_device_cgroup_denies_unlisted_device(containers: Containers) -> None:
    # /dev/kettle-fuse exists (linux.devices) but the device cgroup does not allow it.
    bundle = containers.bundle("/bin/probe", "try", "open", "/dev/kettle-mem", "r")
    bundle.linux["devices"] = [
        {"path": "/dev/kettle-mem", "type": "c", "major": 1, "minor": 1, "fileMode": 0o600}
    ]
    bundle.process["capabilities"]["bounding"].append("CAP_SYS_RAWIO")
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert '"errno":1,' in result.stdout  # EPERM from the device cgroup


def test_mknod_denied_without_cap(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.add_tmp()
    result = run_probe(containers, bundle, "try", "mknod", "/tmp/node", "c", "1", "3")
    assert result["errno"] == errno.EPERM


def test_mount_target_symlink_stays_inside_rootfs(runtime: Runtime, containers: Containers) -> None:
    host_target = Path(f"/tmp/kettle-escape-{uuid.uuid4().hex[:10]}")
    assert not host_target.exists()
    bundle = containers.bundle("/bin/true")
    bundle.writable()
    (bundle.rootfs / "evil").symlink_to(str(host_target))
    bundle.add_mount("/evil/inner", "tmpfs", "tmpfs", [])
    try:
        result = containers.run(bundle)
        # Either the mount lands inside the rootfs or the runtime refuses: never on the host.
        assert not host_target.exists(), result.describe()
        assert leaks.mounts_naming(str(host_target)) == []
    finally:
        if host_target.exists():
            os.system(f"umount -R {host_target}/inner 2>/dev/null")
            host_target.joinpath("inner").rmdir()
            host_target.rmdir()


def test_rootfs_propagation_private(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.linux["rootfsPropagation"] = "private"
    report = run_probe(containers, bundle)
    root_line = next(line for line in report["mountinfo"] if line.split()[4] == "/")
    assert "shared:" not in root_line
