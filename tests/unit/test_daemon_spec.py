"""kettled's OCI spec from a create request: flags, defaults, volumes and the seccomp profile."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kettle.api import kettle_pb as pb
from kettle.daemon import seccomp_profile as sp
from kettle.daemon import spec as specmod
from kettle.daemon.volumes import REMOVE_WITH_CONTAINER, VolumeStore
from kettle.errors import FailedPrecondition, InvalidArgument, NotFound
from kettle.image.config import ImageConfig

CID = "c" * 64
USER: dict[str, object] = {"uid": 0, "gid": 0}


def _image(**kw: Any) -> ImageConfig:
    return ImageConfig(os="linux", architecture="amd64", cmd=("sh",), **kw)


def _build(
    req: pb.CreateContainerRequest | None = None,
    store: VolumeStore | None = None,
    image: ImageConfig | None = None,
) -> dict[str, Any]:
    return specmod.build(
        "ns",
        CID,
        "host",
        image or _image(),
        req or pb.CreateContainerRequest(image="i"),
        USER,
        store,
    )


def _req(**kw: Any) -> pb.CreateContainerRequest:
    return pb.CreateContainerRequest(image="i", **kw)


def _mount(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, found
    return found[0]


def _syscalls(profile: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in profile["syscalls"]:
        for name in entry["names"]:
            out.setdefault(name, []).append(entry)
    return out


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_are_dockers() -> None:
    spec = _build()
    proc = spec["process"]
    assert proc["terminal"] is False and proc["noNewPrivileges"] is False
    assert sorted(proc["capabilities"]["bounding"]) == sorted(specmod.DEFAULT_CAPS)
    assert "ambient" not in proc["capabilities"]
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    linux = spec["linux"]
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert linux["seccomp"]["defaultErrnoRet"] == 1
    for path in ("/proc/kcore", "/proc/keys", "/sys/firmware", "/sys/devices/virtual/powercap"):
        assert path in linux["maskedPaths"]
    for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/bus"):
        assert path in linux["readonlyPaths"]
    assert f"size={64 << 20}" in _mount(spec, "/dev/shm")["options"]
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "devices" not in linux and "memory" not in linux["resources"]
    assert "ro" in _mount(spec, "/sys")["options"]


def test_tty_and_read_only() -> None:
    spec = _build(_req(tty=True, read_only=True))
    assert spec["process"]["terminal"] is True
    assert spec["root"]["readonly"] is True


# --- capabilities -----------------------------------------------------------------------------


def test_cap_add_and_drop_take_any_spelling() -> None:
    caps = specmod.capabilities(["sys_admin", "CAP_NET_ADMIN"], ["chown", "CAP_KILL"], False)
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_ADMIN" in caps
    assert "CAP_CHOWN" not in caps and "CAP_KILL" not in caps


def test_cap_all() -> None:
    everything = specmod.all_caps()
    assert specmod.capabilities(["ALL"], ["mknod"], False) == [
        c for c in everything if c != "CAP_MKNOD"
    ]
    assert specmod.capabilities(["chown"], ["all"], False) == ["CAP_CHOWN"]
    assert specmod.capabilities([], [], True) == everything


def test_unknown_capability() -> None:
    with pytest.raises(InvalidArgument, match=r"^--cap-add CAP_FLY: unknown capability$"):
        _build(_req(cap_add=["CAP_FLY"]))
    with pytest.raises(InvalidArgument, match=r"^--cap-drop nope: unknown capability$"):
        _build(_req(cap_drop=["nope"]))


# --- privileged and security options ---------------------------------------------------------


def test_privileged() -> None:
    spec = _build(_req(privileged=True))
    linux = spec["linux"]
    assert "seccomp" not in linux
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == []
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert spec["process"]["capabilities"]["bounding"] == specmod.all_caps()
    paths = {d["path"] for d in linux["devices"]}
    if os.path.exists("/dev/null"):
        assert "/dev/null" in paths
    assert "/dev/console" not in paths and not any(p.startswith("/dev/pts/") for p in paths)
    assert "ro" not in _mount(spec, "/sys")["options"]


def test_security_opts() -> None:
    spec = _build(_req(security_opt=["no-new-privileges"]))
    assert spec["process"]["noNewPrivileges"] is True
    spec = _build(_req(security_opt=["no-new-privileges:false"]))
    assert spec["process"]["noNewPrivileges"] is False
    assert "seccomp" not in _build(_req(security_opt=["seccomp=unconfined"]))["linux"]
    with pytest.raises(InvalidArgument, match="--security-opt bogus: unknown"):
        _build(_req(security_opt=["bogus"]))
    with pytest.raises(InvalidArgument, match="--security-opt no-new-privileges=maybe"):
        _build(_req(security_opt=["no-new-privileges=maybe"]))
    with pytest.raises(InvalidArgument, match="apparmor is not supported"):
        _build(_req(security_opt=["apparmor=myprofile"]))


def test_seccomp_profile_json_and_file(tmp_path: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}  # fmt: skip
    spec = _build(_req(security_opt=["seccomp=" + json.dumps(profile)]))
    assert spec["linux"]["seccomp"] == {**profile, "syscalls": profile["syscalls"]}
    f = tmp_path / "p.json"
    f.write_text(json.dumps(profile))
    assert _build(_req(security_opt=[f"seccomp={f}"]))["linux"]["seccomp"]["defaultAction"] == (
        "SCMP_ACT_ALLOW"
    )
    missing = tmp_path / "missing.json"
    with pytest.raises(InvalidArgument, match=f"seccomp={missing}: no such file"):
        _build(_req(security_opt=[f"seccomp={missing}"]))
    f.write_text("{oops")
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        _build(_req(security_opt=[f"seccomp={f}"]))
    with pytest.raises(InvalidArgument, match="defaultAction: unknown action SCMP_ACT_MAYBE"):
        _build(_req(security_opt=['seccomp={"defaultAction": "SCMP_ACT_MAYBE"}']))


# --- the default seccomp profile --------------------------------------------------------------


def test_default_profile_shape() -> None:
    prof = sp.default_profile(specmod.DEFAULT_CAPS, machine="x86_64", kernel=(6, 1))
    assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    calls = _syscalls(prof)
    for name in ("read", "openat", "execve", "futex", "chroot", "arch_prctl", "ptrace"):
        assert calls[name][0]["action"] == "SCMP_ACT_ALLOW", name
    for name in ("mount", "umount2", "unshare", "setns", "reboot", "init_module", "kexec_load",
                 "bpf", "perf_event_open", "settimeofday", "open_by_handle_at", "keyctl",
                 "add_key", "swapon", "pivot_root", "kcmp", "iopl", "acct", "vhangup"):  # fmt: skip
        assert name not in calls, name
    (clone,) = calls["clone"]
    assert clone["args"] == [
        {"index": 0, "value": sp.NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    assert sp.NAMESPACE_FLAGS == 0x7E020000
    (clone3,) = calls["clone3"]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    values = sorted(e["args"][0]["value"] for e in calls["personality"])
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    (sock,) = calls["socket"]
    assert sock["args"] == [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]


def test_capabilities_open_their_syscalls() -> None:
    caps = [*specmod.DEFAULT_CAPS, "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"]
    calls = _syscalls(sp.default_profile(caps, machine="x86_64", kernel=(6, 1)))
    for name in ("mount", "unshare", "setns", "kcmp", "settimeofday", "clone3"):
        assert calls[name][0]["action"] == "SCMP_ACT_ALLOW", name
    assert all("args" not in e for e in calls["clone"])
    without_chroot = _syscalls(sp.default_profile(["CAP_CHOWN"], machine="x86_64", kernel=(6, 1)))
    assert "chroot" not in without_chroot


def test_profile_conditions_by_arch_and_kernel() -> None:
    s390 = _syscalls(sp.default_profile([], machine="s390x", kernel=(6, 1)))
    assert [e["args"][0]["index"] for e in s390["clone"]] == [1]
    assert "arch_prctl" not in s390 and "s390_runtime_instr" in s390
    old = _syscalls(sp.default_profile([], machine="x86_64", kernel=(4, 4)))
    assert "ptrace" not in old
    assert sp.kernel_version("6.18.0-1-amd64") == (6, 18)
    assert sp.kernel_version("4.8") == (4, 8)


def test_default_profile_loads_in_libseccomp() -> None:
    from kettle.runtime import seccomp as rt

    try:
        rt.libseccomp_version()
    except Exception as e:  # no libseccomp on this machine
        pytest.skip(f"libseccomp unavailable: {e}")
    for caps in (specmod.DEFAULT_CAPS, specmod.all_caps()):
        rt.validate(sp.default_profile(caps), rules=True)


def test_docker_format_profile_is_converted() -> None:
    docker = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "x"},
            {"name": "write", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["amd64"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        ],
    }  # fmt: skip
    out = sp.from_docker(docker, ["CAP_CHOWN"], machine="x86_64", kernel=(6, 1))
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert "archMap" not in out
    names = [e["names"] for e in out["syscalls"]]
    assert names == [["read"], ["write"], ["arch_prctl"], ["clone"], ["ptrace"]]
    assert all(set(e) <= {"names", "action", "args", "errnoRet"} for e in out["syscalls"])
    admin = sp.from_docker(docker, ["CAP_SYS_ADMIN"], machine="aarch64", kernel=(4, 4))
    assert [e["names"] for e in admin["syscalls"]] == [["read"], ["write"], ["mount"]]
    assert admin["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


# --- resources --------------------------------------------------------------------------------


def test_resources_map_to_the_spec() -> None:
    r = pb.Resources(
        memory=64 << 20,
        memory_reservation=32 << 20,
        nano_cpus=1_500_000_000,
        cpu_shares=512,
        cpuset_cpus="0-1",
        pids_limit=50,
    )
    out = specmod.resources(r, cpus={0, 1}, swap=True)
    assert out == {
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
        "cpu": {"period": 100_000, "quota": 150_000, "shares": 512, "cpus": "0-1"},
        "pids": {"limit": 50},
    }
    assert specmod.resources(pb.Resources(memory=64 << 20), swap=False) == {
        "memory": {"limit": 64 << 20}
    }
    assert specmod.resources(pb.Resources(memory=64 << 20, memory_swap=-1), swap=True) == {
        "memory": {"limit": 64 << 20, "swap": -1}
    }
    assert specmod.resources(pb.Resources(pids_limit=-1)) == {"pids": {"limit": -1}}


@pytest.mark.parametrize(
    ("r", "words"),
    [
        (pb.Resources(memory=1 << 20), "--memory 1048576: the minimum is 6MiB"),
        (pb.Resources(memory_swap=1 << 30), "--memory-swap 1073741824: needs --memory"),
        (pb.Resources(memory=64 << 20, memory_swap=8 << 20), "must be at least --memory"),
        (pb.Resources(memory=64 << 20, memory_reservation=128 << 20), "above --memory"),
        (pb.Resources(nano_cpus=3_000_000_000), "--cpus 3: the range is 0.01 to 2"),
        (pb.Resources(cpuset_cpus="0-3"), "--cpuset-cpus 0-3: CPUs 2,3 are not available"),
        (pb.Resources(cpuset_cpus="x"), "--cpuset-cpus x: invalid CPU list"),
        (pb.Resources(pids_limit=-5), "--pids-limit -5"),
        (pb.Resources(cpu_shares=-2), "--cpu-shares -2"),
    ],
)
def test_bad_resources(r: pb.Resources, words: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        specmod.resources(r, cpus={0, 1}, swap=True)
    assert words in str(exc.value)


def test_swap_without_accounting_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="does not account swap"):
        specmod.resources(pb.Resources(memory=64 << 20, memory_swap=1 << 30), swap=False)


def test_shm_size() -> None:
    spec = _build(_req(shm_size=1 << 20))
    opts = _mount(spec, "/dev/shm")["options"]
    assert [o for o in opts if o.startswith("size=")] == [f"size={1 << 20}"]
    with pytest.raises(InvalidArgument, match="--shm-size"):
        _build(_req(shm_size=-1))


def test_ulimits_replace_the_default() -> None:
    spec = _build(_req(ulimits=[pb.Ulimit(name="nofile", soft=100, hard=200),
                                pb.Ulimit(name="core", soft=-1, hard=-1)]))  # fmt: skip
    rl = spec["process"]["rlimits"]
    assert {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200} in rl
    assert {
        "type": "RLIMIT_CORE",
        "soft": specmod.RLIM_INFINITY,
        "hard": specmod.RLIM_INFINITY,
    } in rl
    assert [r["type"] for r in rl].count("RLIMIT_NOFILE") == 1
    with pytest.raises(InvalidArgument, match="--ulimit nofiles: unknown limit"):
        _build(_req(ulimits=[pb.Ulimit(name="nofiles", soft=1, hard=1)]))
    with pytest.raises(InvalidArgument, match="soft limit above"):
        _build(_req(ulimits=[pb.Ulimit(name="nofile", soft=10, hard=5)]))


# --- devices ----------------------------------------------------------------------------------


def test_device() -> None:
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    spec = _build(_req(devices=[pb.Device(host_path="/dev/null", container_path="/dev/n2",
                                          permissions="rw")]))  # fmt: skip
    (node,) = spec["linux"]["devices"]
    assert (node["path"], node["type"], node["major"], node["minor"]) == ("/dev/n2", "c", 1, 3)
    assert spec["linux"]["resources"]["devices"][-1] == {
        "allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"
    }  # fmt: skip


def test_bad_devices(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^--device /dev/nope-x: no such device$"):
        _build(_req(devices=[pb.Device(host_path="/dev/nope-x")]))
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(InvalidArgument, match="not a device node"):
        _build(_req(devices=[pb.Device(host_path=str(f))]))
    with pytest.raises(InvalidArgument, match="invalid permissions"):
        _build(_req(devices=[pb.Device(host_path="/dev/null", permissions="rwx")]))


# --- init -------------------------------------------------------------------------------------


def test_init_prepends_tini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tini"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(specmod, "INIT_BINARY", str(fake))
    spec = _build(_req(init=True, args=["sleep", "1"]))
    assert spec["process"]["args"] == [specmod.INIT_PATH, "--", "sleep", "1"]
    m = _mount(spec, specmod.INIT_PATH)
    assert (m["source"], m["type"]) == (str(fake), "bind") and "ro" in m["options"]
    monkeypatch.setattr(specmod, "INIT_BINARY", str(tmp_path / "missing"))
    with pytest.raises(FailedPrecondition, match=r"--init: .* is not installed"):
        _build(_req(init=True))


# --- mounts and volumes -----------------------------------------------------------------------


def test_bind_mount_makes_a_missing_host_dir(tmp_path: Path) -> None:
    host = tmp_path / "a" / "b"
    spec = _build(_req(mounts=[pb.Mount(type="bind", source=str(host), target="/data",
                                        readonly=True, options=["rshared"])]))  # fmt: skip
    assert host.is_dir()
    m = _mount(spec, "/data")
    assert m == {"destination": "/data", "type": "bind", "source": str(host),
                 "options": ["rbind", "ro", "rshared"]}  # fmt: skip


def test_named_and_anonymous_volumes(tmp_path: Path) -> None:
    store = VolumeStore(str(tmp_path / "volumes"))
    req = _req(mounts=[
        pb.Mount(type="volume", source="data", target="/data"),
        pb.Mount(type="volume", target="/anon", options=[REMOVE_WITH_CONTAINER]),
        pb.Mount(type="volume", target="/keep"),
    ])  # fmt: skip
    spec = _build(req, store)
    data = store.get("data")
    assert _mount(spec, "/data")["source"] == data.mountpoint
    assert os.path.isdir(data.mountpoint) and not data.anonymous_for
    anon = {v.mountpoint: v for v in store.anonymous_of(CID)}
    assert len(anon) == 2
    assert anon[_mount(spec, "/anon")["source"]].remove_with_container is True
    assert anon[_mount(spec, "/keep")["source"]].remove_with_container is False
    assert all(REMOVE_WITH_CONTAINER not in m.get("options", []) for m in spec["mounts"])
    # the same name again is the same volume
    spec2 = _build(_req(mounts=[pb.Mount(type="volume", source="data", target="/d")]), store)
    assert _mount(spec2, "/d")["source"] == data.mountpoint


def test_image_volumes_get_anonymous_volumes(tmp_path: Path) -> None:
    store = VolumeStore(str(tmp_path / "volumes"))
    image = _image(volumes=("/var/lib/db", "/covered"))
    req = _req(auto_remove=True, mounts=[pb.Mount(type="tmpfs", target="/covered")])
    spec = _build(req, store, image)
    (vol,) = store.anonymous_of(CID)
    assert _mount(spec, "/var/lib/db")["source"] == vol.mountpoint
    assert vol.remove_with_container is True
    assert _mount(spec, "/covered")["type"] == "tmpfs"


def test_tmpfs_options() -> None:
    spec = _build(_req(mounts=[
        pb.Mount(type="tmpfs", target="/t", options=["size=1m", "exec"]),
        pb.Mount(type="tmpfs", target="/dev/shm", readonly=True),
    ]))  # fmt: skip
    assert _mount(spec, "/t")["options"] == ["nosuid", "nodev", "exec", "size=1m"]
    assert _mount(spec, "/dev/shm")["options"] == ["nosuid", "nodev", "noexec", "ro"]
    with pytest.raises(InvalidArgument, match="unknown tmpfs option 'colour=red'"):
        _build(_req(mounts=[pb.Mount(type="tmpfs", target="/t", options=["colour=red"])]))


def test_user_mounts_are_sorted_parent_first(tmp_path: Path) -> None:
    spec = _build(_req(mounts=[
        pb.Mount(type="tmpfs", target="/a/b/c"),
        pb.Mount(type="bind", source=str(tmp_path), target="/a"),
    ]))  # fmt: skip
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/a") < dests.index("/a/b/c")
    assert dests[0] == "/proc"


@pytest.mark.parametrize(
    ("mounts", "words"),
    [
        ([pb.Mount(type="bind", source="/tmp", target="rel")], "container path 'rel' must be"),
        ([pb.Mount(type="bind", source="rel", target="/c")], "host path 'rel' must be absolute"),
        ([pb.Mount(type="tmpfs", target="/")], "root"),
        ([pb.Mount(type="tmpfs", target="/x"), pb.Mount(type="tmpfs", target="/x/")],
         "duplicate mount point /x"),
        ([pb.Mount(type="nfs", target="/x")], "unknown mount type 'nfs'"),
        ([pb.Mount(type="volume", source="-bad", target="/x")], "volume name '-bad'"),
        ([pb.Mount(type="bind", source="/tmp", target="/x", options=["weird"])],
         "unknown mount option 'weird'"),
    ],
)  # fmt: skip
def test_bad_mounts(mounts: list[pb.Mount], words: str, tmp_path: Path) -> None:
    store = VolumeStore(str(tmp_path / "volumes"))
    with pytest.raises(InvalidArgument) as exc:
        _build(_req(mounts=mounts), store)
    assert words in str(exc.value)
    assert store.all() == []


def test_a_bad_flag_makes_no_volume(tmp_path: Path) -> None:
    store = VolumeStore(str(tmp_path / "volumes"))
    req = _req(mounts=[pb.Mount(type="volume", source="v1", target="/v")], cap_add=["bogus"])
    with pytest.raises(InvalidArgument):
        _build(req, store)
    with pytest.raises(NotFound):
        store.get("v1")


def test_volume_store(tmp_path: Path) -> None:
    store = VolumeStore(str(tmp_path / "volumes"))
    vol, made = store.create("v1", {"a": "b"})
    assert made and vol.labels == {"a": "b"}
    (Path(vol.mountpoint) / "f").write_text("x")
    again, made = store.create("v1")
    assert not made and again.created_ns == vol.created_ns and again.labels == {"a": "b"}
    assert [v.name for v in store.all()] == ["v1"]
    store.remove("v1")
    assert store.all() == [] and os.listdir(store.root) == []
    with pytest.raises(NotFound, match="no such volume: v1"):
        store.remove("v1")
    with pytest.raises(InvalidArgument, match="volume name"):
        store.create("../x")
    with pytest.raises(NotFound):
        store.get("../x")
