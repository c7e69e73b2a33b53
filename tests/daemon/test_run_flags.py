"""kctl run/create flags seen from inside the container (and from the host's cgroupfs): mounts,
volumes, resources, capabilities, seccomp, devices, --init; and bad flags refused cleanly."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import CGROUP_ROOT, SHIM_STATE, Image, Kettled, wait_for

pytestmark = pytest.mark.privileged

DEFAULT_CAPEFF = 0xA80425FB  # Docker's default capability set


@pytest.fixture(scope="session")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", image.ref)
    return image.ref


def _name() -> str:
    return f"rf-{uuid.uuid4().hex[:10]}"


def _run(k: Kettled, *args: str) -> str:
    """`kctl run --rm ARGS`'s stdout; it must succeed."""
    res = k.kctl("run", "--rm", *args)
    assert res.returncode == 0, f"run {args}: {res.returncode} {res.stdout} {res.stderr}"
    return res.stdout


def _status(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{key} not in {text!r}")


def _volumes(k: Kettled) -> dict[str, dict[str, object]]:
    return {v["name"]: v for v in json.loads(k.ok("volume", "ls", "--format", "json"))}


@pytest.fixture
def detached(kettled: Kettled) -> Iterator[list[str]]:
    """Container ids to remove after the test."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        kettled.kctl("rm", "-f", cid)


@pytest.fixture
def volume(kettled: Kettled) -> Iterator[str]:
    name = f"vol-{uuid.uuid4().hex[:10]}"
    yield name
    kettled.kctl("volume", "rm", "-f", name)


# --- confinement --------------------------------------------------------------------------------


def test_default_confinement(kettled: Kettled, ref: str) -> None:
    out = _run(
        kettled, ref, "sh", "-c", "cat /proc/self/status; echo timer=$(wc -c < /proc/timer_list)"
    )
    assert int(_status(out, "CapEff"), 16) == DEFAULT_CAPEFF
    assert int(_status(out, "CapBnd"), 16) == DEFAULT_CAPEFF
    assert _status(out, "Seccomp") == "2"
    assert _status(out, "NoNewPrivs") == "0"
    assert "timer=0" in out  # masked (/dev/null over it)
    res = kettled.kctl("run", "--rm", ref, "sh", "-c", "echo 1 > /proc/sys/kernel/printk")
    assert res.returncode != 0 and "Read-only file system" in res.stderr


def test_default_seccomp_blocks_namespaces_without_sys_admin(kettled: Kettled, ref: str) -> None:
    # Making a user namespace needs no capability from the kernel: only the profile stops it.
    res = kettled.kctl("run", "--rm", ref, "unshare", "-U", "true")
    assert res.returncode != 0 and "Operation not permitted" in res.stderr
    out = _run(kettled, "--security-opt", "seccomp=unconfined", ref, "sh", "-c",
               "grep Seccomp: /proc/self/status; unshare -U true && echo made")  # fmt: skip
    assert _status(out, "Seccomp") == "0" and "made" in out


def test_cap_sys_admin_opens_mount_in_the_profile(kettled: Kettled, ref: str) -> None:
    script = "mkdir /tmp/m && mount -t tmpfs none /tmp/m && echo mounted"
    res = kettled.kctl("run", "--rm", ref, "sh", "-c", script)
    assert res.returncode != 0 and "mounted" not in res.stdout
    out = _run(kettled, "--cap-add", "sys_admin", ref, "sh", "-c", script)
    assert "mounted" in out


def test_cap_add_and_drop(kettled: Kettled, ref: str) -> None:
    out = _run(kettled, "--cap-drop", "ALL", "--cap-add", "CAP_CHOWN", "--cap-add", "kill", ref,
               "cat", "/proc/self/status")  # fmt: skip
    assert int(_status(out, "CapEff"), 16) == (1 << 0) | (1 << 5)
    out = _run(kettled, "--cap-drop", "net_raw", ref, "cat", "/proc/self/status")
    assert int(_status(out, "CapEff"), 16) == DEFAULT_CAPEFF & ~(1 << 13)


def test_privileged(kettled: Kettled, ref: str) -> None:
    host = Path("/proc/self/status").read_text()
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    expected = int(_status(host, "CapBnd"), 16) & ((1 << (last + 1)) - 1)
    extra = next(
        (
            d
            for d in ("/dev/kmsg", "/dev/mem", "/dev/loop-control", "/dev/vda")
            if os.path.exists(d)
        ),
        None,
    )
    script = f"cat /proc/self/status; echo timer=$(wc -c < /proc/timer_list); ls {extra or '/dev'}"
    out = _run(kettled, "--privileged", ref, "sh", "-c", script)
    assert int(_status(out, "CapEff"), 16) == expected
    assert _status(out, "Seccomp") == "0"
    assert "timer=0" not in out  # no masked paths
    if extra:
        assert extra in out


def test_no_new_privileges(kettled: Kettled, ref: str) -> None:
    out = _run(kettled, "--security-opt", "no-new-privileges", ref, "cat", "/proc/self/status")
    assert _status(out, "NoNewPrivs") == "1"


def test_custom_seccomp_profile(kettled: Kettled, ref: str, tmp_path: Path) -> None:
    prof = tmp_path / "deny-mkdir.json"
    prof.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))  # fmt: skip
    for _ in range(2):  # the second time the shim has the program compiled already
        res = kettled.kctl("run", "--rm", "--security-opt", f"seccomp={prof}", ref, "mkdir", "/x")
        assert res.returncode != 0 and "Operation not permitted" in res.stderr
    assert _run(kettled, ref, "mkdir", "/tmp/x") == ""
    # The shim keeps compiled programs in memory, not in the runtime's state root.
    assert not (SHIM_STATE / kettled.namespace / "@seccomp").exists()


# --- resources ----------------------------------------------------------------------------------


def _cgroup(k: Kettled, cid: str, v1: tuple[str, str], v2: str) -> str:
    unified = (CGROUP_ROOT / "cgroup.controllers").exists()
    if unified:
        path = CGROUP_ROOT / k.namespace / cid / v2
    else:
        path = CGROUP_ROOT / v1[0] / k.namespace / cid / v1[1]
    return path.read_text().strip()


def test_resources_reach_the_cgroup(kettled: Kettled, ref: str, detached: list[str]) -> None:
    cid = kettled.ok(
        "run", "-d", "--memory", "64m", "--memory-swap", "96m", "--memory-reservation", "32m",
        "--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "50",
        ref, "sleep", "60",
    ).strip()  # fmt: skip
    detached.append(cid)
    assert _cgroup(kettled, cid, ("memory", "memory.limit_in_bytes"), "memory.max") == str(64 << 20)
    assert _cgroup(kettled, cid, ("memory", "memory.soft_limit_in_bytes"), "memory.low") == str(
        32 << 20
    )
    if not (CGROUP_ROOT / "cgroup.controllers").exists():
        swap = _cgroup(kettled, cid, ("memory", "memory.memsw.limit_in_bytes"), "")
        assert swap == str(96 << 20)
        assert _cgroup(kettled, cid, ("cpu", "cpu.cfs_quota_us"), "") == "50000"
        assert _cgroup(kettled, cid, ("cpu", "cpu.shares"), "") == "512"
    else:
        assert _cgroup(kettled, cid, ("", ""), "cpu.max") == "50000 100000"
    assert _cgroup(kettled, cid, ("pids", "pids.max"), "pids.max") == "50"
    assert _cgroup(kettled, cid, ("cpuset", "cpuset.cpus"), "cpuset.cpus") == "0"


def test_pids_limit_is_enforced(kettled: Kettled, ref: str) -> None:
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; echo all-forked"
    res = kettled.kctl("run", "--rm", "--pids-limit", "4", ref, "sh", "-c", script)
    assert "all-forked" not in res.stdout
    assert "can't fork" in res.stderr or "Resource temporarily unavailable" in res.stderr, res
    assert "all-forked" in _run(kettled, "--pids-limit", "20", ref, "sh", "-c", script)


def test_ulimit(kettled: Kettled, ref: str) -> None:
    out = _run(kettled, "--ulimit", "nofile=512:1024", ref, "sh", "-c", "ulimit -n; ulimit -Hn")
    assert out.split() == ["512", "1024"]


def test_shm_size(kettled: Kettled, ref: str) -> None:
    default = _run(kettled, ref, "grep", " /dev/shm ", "/proc/mounts")
    assert "size=65536k" in default
    assert "size=2048k" in _run(
        kettled, "--shm-size", "2m", ref, "grep", " /dev/shm ", "/proc/mounts"
    )


# --- filesystems --------------------------------------------------------------------------------


def test_read_only_root_and_tmpfs(kettled: Kettled, ref: str) -> None:
    script = (
        "touch /x 2>&1; echo data > /scratch/f && echo scratch-ok; "
        "echo data > /dev/shm/f && echo shm-ok; grep ' /scratch ' /proc/mounts"
    )
    out = _run(
        kettled, "--read-only", "--tmpfs", "/scratch:size=1m,mode=1777", ref, "sh", "-c", script
    )
    assert "Read-only file system" in out
    assert "scratch-ok" in out and "shm-ok" in out
    (line,) = [ln for ln in out.splitlines() if " /scratch " in ln]
    opts = line.split()[3].split(",")
    assert {"rw", "nosuid", "nodev", "noexec", "size=1024k"} <= set(opts)


def test_mount_flag_tmpfs(kettled: Kettled, ref: str) -> None:
    out = _run(kettled, "--mount", "type=tmpfs,target=/t,tmpfs-size=1m", ref,
               "grep", " /t ", "/proc/mounts")  # fmt: skip
    assert "size=1024k" in out


def test_bind_mount(kettled: Kettled, ref: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("from host\n")
    script = "cat /data/f; echo x > /data/g 2>&1 || echo write-failed"
    out = _run(kettled, "-v", f"{tmp_path}:/data:ro", ref, "sh", "-c", script)
    assert "from host" in out and "write-failed" in out
    assert not (tmp_path / "g").exists()
    out = _run(kettled, "-v", f"{tmp_path}:/data", ref, "sh", "-c", "echo back > /data/g")
    assert (tmp_path / "g").read_text() == "back\n"


def test_bind_mount_makes_the_missing_host_dir(kettled: Kettled, ref: str, tmp_path: Path) -> None:
    host = tmp_path / "new" / "dir"
    _run(kettled, "-v", f"{host}:/d", ref, "sh", "-c", "echo hi > /d/f")
    assert (host / "f").read_text() == "hi\n"


def test_named_volume_survives_the_container(kettled: Kettled, ref: str, volume: str) -> None:
    _run(kettled, "-v", f"{volume}:/data", ref, "sh", "-c", "echo persisted > /data/f")
    assert volume in _volumes(kettled)
    assert _run(kettled, "-v", f"{volume}:/data:ro", ref, "cat", "/data/f") == "persisted\n"
    (info,) = json.loads(kettled.ok("volume", "inspect", volume))
    assert Path(str(info["mountpoint"]), "f").read_text() == "persisted\n"
    assert info["used_by"] == []


def test_volume_in_use_is_kept(
    kettled: Kettled, ref: str, volume: str, detached: list[str]
) -> None:
    cid = kettled.ok("create", "-v", f"{volume}:/data", ref, "true").strip()
    detached.append(cid)
    (info,) = json.loads(kettled.ok("volume", "inspect", volume))
    assert info["used_by"] == [cid]
    res = kettled.kctl("volume", "rm", volume)
    assert res.returncode != 0 and res.stderr.startswith("kctl: ") and "in use" in res.stderr
    assert volume in _volumes(kettled)
    kettled.ok("rm", cid)
    kettled.ok("volume", "rm", volume)
    assert volume not in _volumes(kettled)


def test_volume_commands(kettled: Kettled, volume: str) -> None:
    assert kettled.ok("volume", "create", "--label", "a=b", volume).strip() == volume
    (info,) = json.loads(kettled.ok("volume", "inspect", volume))
    assert info["labels"] == {"a": "b"} and os.path.isdir(str(info["mountpoint"]))
    assert volume in kettled.ok("volume", "ls", "-q").split()
    assert volume in kettled.ok("volume", "ls")
    res = kettled.kctl("volume", "inspect", "no-such-volume")
    assert res.returncode != 0 and "no such volume: no-such-volume" in res.stderr
    res = kettled.kctl("volume", "create", "../bad")
    assert res.returncode != 0 and "volume name" in res.stderr


def test_anonymous_volume_goes_with_a_rm_container(kettled: Kettled, ref: str) -> None:
    before = set(_volumes(kettled))
    out = _run(
        kettled,
        "-v",
        "/anon",
        ref,
        "sh",
        "-c",
        "echo x > /anon/f && grep -c ' /anon ' /proc/mounts",
    )
    assert out == "1\n"
    wait_for(lambda: set(_volumes(kettled)) == before, "the anonymous volume to go")


def test_anonymous_volume_outlives_a_plain_rm(kettled: Kettled, ref: str) -> None:
    # Docker's rule: without --rm (or rm -v) an anonymous volume stays, unnamed and unused.
    before = set(_volumes(kettled))
    cid = kettled.ok("create", "-v", "/anon", ref, "true").strip()
    try:
        (new,) = set(_volumes(kettled)) - before
        assert _volumes(kettled)[new]["used_by"] == [cid]
    finally:
        kettled.ok("rm", cid)
    assert _volumes(kettled)[new]["used_by"] == []
    kettled.ok("volume", "rm", new)


# --- devices and init ---------------------------------------------------------------------------


def test_device(kettled: Kettled, ref: str) -> None:
    script = "stat -c '%t:%T' /dev/mynull; echo hi > /dev/mynull && echo wrote"
    out = _run(kettled, "--device", "/dev/null:/dev/mynull:rwm", ref, "sh", "-c", script)
    assert out.split() == ["1:3", "wrote"]


def test_device_permissions(kettled: Kettled, ref: str) -> None:
    # Not /dev/null: every container may write that one anyway.
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no /dev/loop-control on this host")
    script = ": > /dev/lc && echo opened-for-writing"  # open only: nothing reaches the device
    res = kettled.kctl(
        "run", "--rm", "--device", "/dev/loop-control:/dev/lc:r", ref, "sh", "-c", script
    )
    assert res.returncode != 0 and "Operation not permitted" in res.stderr
    out = _run(kettled, "--device", "/dev/loop-control:/dev/lc:rw", ref, "sh", "-c", script)
    assert out == "opened-for-writing\n"


def test_init_is_pid_1_and_reaps(kettled: Kettled, ref: str) -> None:
    if not os.path.exists("/usr/bin/tini-static"):
        pytest.skip("tini is not installed (apt-get install tini)")
    # The inner sh leaves an orphan that is reparented to pid 1; only an init reaps it.
    script = (
        "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); "
        "orphan=$(sh -c 'sleep 0.2 >/dev/null & echo $!'); i=0; "
        "while [ -e /proc/$orphan ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "
        "[ -e /proc/$orphan ] && echo zombie || echo reaped"
    )
    out = _run(kettled, "--init", ref, "sh", "-c", script)
    assert out.splitlines()[0].startswith("pid1=/dev/init -- sh -c")
    assert out.splitlines()[-1] == "reaped"


# --- what kettled only carries --------------------------------------------------------------------


def test_carried_settings(kettled: Kettled, ref: str, detached: list[str]) -> None:
    cid = kettled.ok(
        "create", "-t", "--stop-signal", "usr1", "--stop-timeout", "3", "--restart",
        "on-failure:2", "--log-opt", "max-size=1m", "--health-cmd", "true",
        "--health-interval", "1m30s", "--health-retries", "2", ref, "sh",
    ).strip()  # fmt: skip
    detached.append(cid)
    (info,) = json.loads(kettled.ok("inspect", cid))
    config = info["config"]
    assert (config["stop_signal"], config["stop_timeout"]) == ("SIGUSR1", 3)
    assert config["restart"]["name"] == "on-failure" and config["restart"]["max_retries"] == 2
    assert config["log_opts"] == {"max-size": "1m"}
    assert config["health"]["test"] == ["CMD-SHELL", "true"]
    assert config["health"]["interval_ms"] == 90_000 and config["health"]["retries"] == 2
    assert info["spec"]["process"]["terminal"] is True


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--cap-add", "FLY"], "--cap-add FLY: unknown capability"),
        (["--memory", "12q"], "--memory 12q: invalid size"),
        (["--memory", "1m"], "the minimum is 6MiB"),
        (["-v", "data:rel"], "-v data:rel: container path 'rel' must be absolute"),
        (["--ulimit", "nofiles=1"], "--ulimit nofiles=1: unknown limit"),
        (["--device", "/dev/no-such-dev"], "--device /dev/no-such-dev: no such device"),
        (["--security-opt", "seccomp=/no/such.json"], "seccomp=/no/such.json: no such file"),
        (["--cpuset-cpus", "0-99"], "--cpuset-cpus 0-99: CPUs"),
        (["--tmpfs", "/t:colour=red"], "unknown tmpfs option 'colour=red'"),
        (["--restart", "sometimes"], "--restart sometimes: unknown policy"),
        (["--health-interval", "5x"], "--health-interval 5x: invalid duration"),
    ],
)
def test_bad_flags_are_refused_and_create_nothing(
    kettled: Kettled, ref: str, flags: list[str], words: str
) -> None:
    containers = kettled.ok("ps", "-a", "-q")
    volumes = set(_volumes(kettled))
    res = kettled.kctl("run", "--rm", *flags, ref, "true")
    assert res.returncode != 0
    assert res.stderr.startswith("kctl: ") and res.stderr.count("\n") == 1, res.stderr
    assert words in res.stderr, res.stderr
    assert kettled.ok("ps", "-a", "-q") == containers
    assert set(_volumes(kettled)) == volumes


def test_bad_seccomp_json(kettled: Kettled, ref: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = kettled.kctl("run", "--rm", "--security-opt", f"seccomp={bad}", ref, "true")
    assert res.returncode != 0 and f"seccomp={bad}: invalid JSON" in res.stderr
