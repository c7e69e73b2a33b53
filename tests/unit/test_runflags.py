"""kctl run/create flags -> CreateContainerRequest: the pure parsers and the request."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from kettle.api import kettle_pb as pb
from kettle.cli import runflags as rf
from kettle.daemon import volumes
from kettle.errors import InvalidArgument


def _request(*argv: str, auto_remove: bool = False) -> pb.CreateContainerRequest:
    p = argparse.ArgumentParser()
    rf.add_flags(p)
    return rf.request(p.parse_args([*argv, "img"]), auto_remove=auto_remove)


def _error(fn: object, *args: object) -> str:
    assert callable(fn)
    with pytest.raises(InvalidArgument) as exc:
        fn(*args)
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_marker_matches_the_daemon() -> None:
    assert rf.REMOVE_WITH_CONTAINER == volumes.REMOVE_WITH_CONTAINER


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("64m", 64 << 20),
        ("64M", 64 << 20),
        ("1g", 1 << 30),
        ("1.5g", 3 << 29),
        ("10kb", 10 << 10),
        ("2MiB", 2 << 20),
        ("100b", 100),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert rf.parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["", "12q", "-1", "m", "1..2m", "ten"])
def test_bad_sizes_name_the_flag_and_value(text: str) -> None:
    assert _error(rf.parse_size, text, "--memory").startswith(f"--memory {text}")


def test_memory_swap_minus_one_is_unlimited() -> None:
    assert rf.parse_memory_swap("-1") == -1
    assert rf.parse_memory_swap("1g") == 1 << 30


def test_cpus() -> None:
    assert rf.parse_cpus("1.5") == 1_500_000_000
    assert rf.parse_cpus("0.01") == 10_000_000
    for bad in ("0", "-1", "x", "nan"):
        assert "--cpus" in _error(rf.parse_cpus, bad)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1s", 1000), ("500ms", 500), ("1m", 60_000), ("1m30s", 90_000), ("1.5h", 5_400_000),
     ("0", 0), ("2000us", 2)],
)  # fmt: skip
def test_durations(text: str, ms: int) -> None:
    assert rf.parse_duration_ms(text, "--health-interval") == ms


@pytest.mark.parametrize("text", ["", "1", "5x", "s", "-1s", "100us"])
def test_bad_durations(text: str) -> None:
    assert "--health-interval" in _error(rf.parse_duration_ms, text, "--health-interval")


def test_ulimits() -> None:
    assert rf.parse_ulimit("nofile=512:1024") == pb.Ulimit(name="nofile", soft=512, hard=1024)
    assert rf.parse_ulimit("nproc=64") == pb.Ulimit(name="nproc", soft=64, hard=64)
    assert rf.parse_ulimit("core=unlimited") == pb.Ulimit(name="core", soft=-1, hard=-1)
    assert rf.parse_ulimit("core=0:-1") == pb.Ulimit(name="core", soft=0, hard=-1)
    assert "unknown limit 'nofiles'" in _error(rf.parse_ulimit, "nofiles=1")
    assert "soft limit is above" in _error(rf.parse_ulimit, "nofile=10:5")
    assert "name=soft" in _error(rf.parse_ulimit, "nofile")
    assert "not an integer" in _error(rf.parse_ulimit, "nofile=many")


def test_volume_forms(tmp_path: Path) -> None:
    cwd = str(tmp_path)
    assert rf.parse_volume("/h:/c", cwd) == pb.Mount(type="bind", source="/h", target="/c")
    assert rf.parse_volume("/h:/c:ro,rshared", cwd) == pb.Mount(
        type="bind", source="/h", target="/c", readonly=True, options=["rshared"]
    )
    assert rf.parse_volume("./d:/c", cwd).source == str(tmp_path / "d")
    assert rf.parse_volume("data:/c:z", cwd) == pb.Mount(
        type="volume", source="data", target="/c", options=["z"]
    )
    assert rf.parse_volume("/anon", cwd) == pb.Mount(type="volume", target="/anon")
    assert rf.parse_volume("/anon:ro", cwd) == pb.Mount(
        type="volume", target="/anon", readonly=True
    )
    assert rf.parse_volume("/anon", cwd, remove_anonymous=True).options == [
        rf.REMOVE_WITH_CONTAINER
    ]
    # a named volume is never removed with the container
    assert rf.parse_volume("data:/c", cwd, remove_anonymous=True).options == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("data:rel", "container path 'rel' must be absolute"),
        ("/h:rel/x", "container path 'rel/x' must be absolute"),
        ("rel", "container path 'rel' must be absolute"),
        ("/h:/c:bogus", "unknown option 'bogus'"),
        ("/h:/", "root"),
        ("a:/c", "neither an absolute host path nor a volume name"),
        ("a:b:c:d", "use [HOST-PATH"),
        ("/h:/c:nocopy", "nocopy applies to volumes only"),
    ],
)
def test_bad_volumes(text: str, words: str) -> None:
    msg = _error(rf.parse_volume, text, "/")
    assert msg.startswith(f"-v {text}: ") and words in msg


def test_mount_flag(tmp_path: Path) -> None:
    cwd = str(tmp_path)
    src = str(tmp_path)
    assert rf.parse_mount(f"type=bind,source={src},target=/c,readonly", cwd) == pb.Mount(
        type="bind", source=src, target="/c", readonly=True
    )
    assert rf.parse_mount("type=volume,src=v1,dst=/c,volume-nocopy", cwd) == pb.Mount(
        type="volume", source="v1", target="/c", options=["nocopy"]
    )
    assert rf.parse_mount("target=/c", cwd, remove_anonymous=True) == pb.Mount(
        type="volume", target="/c", options=[rf.REMOVE_WITH_CONTAINER]
    )
    assert rf.parse_mount("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770", cwd) == (
        pb.Mount(type="tmpfs", target="/t", options=[f"size={1 << 20}", "mode=1770"])
    )
    missing = str(tmp_path / "missing")
    assert "does not exist" in _error(rf.parse_mount, f"type=bind,src={missing},dst=/c", cwd)
    assert "target is required" in _error(rf.parse_mount, "type=volume,src=v", cwd)
    assert "type must be" in _error(rf.parse_mount, "type=nfs,dst=/c", cwd)
    assert "unknown field 'colour'" in _error(rf.parse_mount, "dst=/c,colour=red", cwd)
    assert "must be absolute" in _error(rf.parse_mount, "type=tmpfs,dst=t", cwd)


def test_tmpfs_flag() -> None:
    assert rf.parse_tmpfs("/run:size=1m,exec") == pb.Mount(
        type="tmpfs", target="/run", options=["size=1m", "exec"]
    )
    assert rf.parse_tmpfs("/run") == pb.Mount(type="tmpfs", target="/run")
    assert _error(rf.parse_tmpfs, "run").startswith("--tmpfs run: container path")


def test_devices() -> None:
    assert rf.parse_device("/dev/null") == pb.Device(host_path="/dev/null")
    assert rf.parse_device("/dev/null:r") == pb.Device(host_path="/dev/null", permissions="r")
    assert rf.parse_device("/dev/null:/dev/n2") == pb.Device(
        host_path="/dev/null", container_path="/dev/n2"
    )
    assert rf.parse_device("/dev/null:/dev/n2:rw") == pb.Device(
        host_path="/dev/null", container_path="/dev/n2", permissions="rw"
    )
    assert "permissions" in _error(rf.parse_device, "/dev/null:/dev/n:rwx")
    assert "absolute" in _error(rf.parse_device, "null")


def test_restart() -> None:
    assert rf.parse_restart("always") == pb.RestartPolicy(name="always")
    assert rf.parse_restart("on-failure:3") == pb.RestartPolicy(name="on-failure", max_retries=3)
    assert rf.parse_restart("unless-stopped").name == "unless-stopped"
    assert "unknown policy" in _error(rf.parse_restart, "sometimes")
    assert "only on-failure" in _error(rf.parse_restart, "always:3")
    assert "not an integer" in _error(rf.parse_restart, "on-failure:x")


def test_security_opt_reads_the_profile(tmp_path: Path) -> None:
    prof = tmp_path / "p.json"
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    sent = rf.security_opt(f"seccomp={prof}")
    assert json.loads(sent.removeprefix("seccomp=")) == {"defaultAction": "SCMP_ACT_ALLOW"}
    assert rf.security_opt("seccomp=unconfined") == "seccomp=unconfined"
    assert rf.security_opt("no-new-privileges") == "no-new-privileges"
    assert rf.security_opt("no-new-privileges:true") == "no-new-privileges:true"
    missing = tmp_path / "none.json"
    assert _error(rf.security_opt, f"seccomp={missing}") == (
        f"--security-opt seccomp={missing}: no such file"
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert "invalid JSON" in _error(rf.security_opt, f"seccomp={bad}")
    assert "unknown security option" in _error(rf.security_opt, "bogus=1")


def test_signal() -> None:
    assert rf.parse_signal("term") == "SIGTERM"
    assert rf.parse_signal("SIGUSR1") == "SIGUSR1"
    assert rf.parse_signal("9") == "9"
    assert "unknown signal" in _error(rf.parse_signal, "SIGNOPE")
    assert "out of range" in _error(rf.parse_signal, "99")


def test_env_file(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# comment\n\nA=1\n  B=two words\n")
    assert rf.parse_env_file(str(f)) == ["A=1", "B=two words"]
    assert "--env-file" in _error(rf.parse_env_file, str(tmp_path / "none"))


def test_request_carries_every_flag(tmp_path: Path) -> None:
    req = _request(
        "-v", f"{tmp_path}:/data:ro", "--tmpfs", "/t", "--read-only",
        "--memory", "64m", "--memory-swap", "-1", "--memory-reservation", "32m",
        "--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "0",
        "--shm-size", "1m", "--ulimit", "nofile=100:200",
        "--cap-add", "sys_admin", "--cap-drop", "CAP_NET_RAW", "--privileged",
        "--security-opt", "no-new-privileges=true", "--device", "/dev/null:/dev/n:r",
        "--init", "--stop-signal", "usr1", "--stop-timeout", "3",
        "--log-opt", "max-size=1m", "--log-opt", "max-file=2", "--restart", "always", "-t",
    )  # fmt: skip
    assert [m.type for m in req.mounts] == ["bind", "tmpfs"]
    assert req.read_only and req.privileged and req.init and req.tty
    assert req.resources == pb.Resources(
        memory=64 << 20,
        memory_swap=-1,
        memory_reservation=32 << 20,
        nano_cpus=500_000_000,
        cpu_shares=512,
        cpuset_cpus="0",
        pids_limit=-1,
    )
    assert req.shm_size == 1 << 20
    assert list(req.ulimits) == [pb.Ulimit(name="nofile", soft=100, hard=200)]
    assert list(req.cap_add) == ["sys_admin"] and list(req.cap_drop) == ["CAP_NET_RAW"]
    assert list(req.security_opt) == ["no-new-privileges=true"]
    assert list(req.devices) == [
        pb.Device(host_path="/dev/null", container_path="/dev/n", permissions="r")
    ]
    assert (req.stop_signal, req.stop_timeout) == ("SIGUSR1", 3)
    assert dict(req.log_opts) == {"max-size": "1m", "max-file": "2"}
    assert req.restart == pb.RestartPolicy(name="always")
    assert req.health is None


def test_defaults_leave_everything_unset() -> None:
    req = _request()
    assert req.resources == pb.Resources()
    assert (req.shm_size, req.stop_timeout, req.stop_signal) == (0, -1, "")
    assert req.restart is None and req.health is None and not req.mounts


def test_rm_marks_anonymous_volumes_only() -> None:
    req = _request("--rm", "-v", "/anon", "-v", "named:/n")
    assert list(req.mounts[0].options) == [rf.REMOVE_WITH_CONTAINER]
    assert list(req.mounts[1].options) == []


def test_restart_conflicts_with_rm() -> None:
    assert "conflicts with --rm" in _error(_request, "--rm", "--restart", "always")
    assert _request("--rm", "--restart", "no").restart == pb.RestartPolicy(name="no")


def test_health_flags() -> None:
    req = _request(
        "--health-cmd", "test -f /ok", "--health-interval", "2s", "--health-timeout", "500ms",
        "--health-retries", "4", "--health-start-period", "1m", "--health-on-failure", "restart",
    )  # fmt: skip
    assert req.health == pb.HealthConfig(
        test=["CMD-SHELL", "test -f /ok"],
        interval_ms=2000,
        timeout_ms=500,
        retries=4,
        start_period_ms=60_000,
        on_failure="restart",
    )
    assert _request("--no-healthcheck").health == pb.HealthConfig(test=["NONE"], disabled=True)
    assert "conflicts" in _error(_request, "--no-healthcheck", "--health-cmd", "true")
    assert "--health-retries -1" in _error(_request, "--health-retries", "-1")
    assert "--health-interval 5x" in _error(_request, "--health-interval", "5x")
