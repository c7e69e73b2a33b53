"""The container process: user, groups, umask, caps, noNewPrivileges, rlimits, oomScoreAdj,
seccomp, personality, ioPriority, env and cwd, as the probe sees them."""

from __future__ import annotations

import errno
import json
import platform
import signal

import pytest

from tests.support.containers import Containers
from tests.support.probe import caps_from_mask, parse_json_line, run_probe
from tests.support.runtime import Runtime

pytestmark = pytest.mark.privileged


def test_default_process(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.process["env"] = ["PATH=/bin", "KETTLE=yes"]
    bundle.process["cwd"] = "/etc"
    report = run_probe(containers, bundle)
    assert (report["uid"], report["gid"]) == (0, 0)
    # runc adds HOME from the user's passwd entry when the spec does not set it.
    assert set(report["env"]) - {"HOME=/root"} == {"PATH=/bin", "KETTLE=yes"}
    assert report["cwd"] == "/etc"
    assert report["pid"] == 1


def test_user_and_additional_gids(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.process["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [10, 20]}
    report = run_probe(containers, bundle)
    assert (report["uid"], report["euid"]) == (1000, 1000)
    assert (report["gid"], report["egid"]) == (1001, 1001)
    assert set(report["groups"]) == {10, 20}


def test_umask(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.process["user"]["umask"] = 0o027
    assert run_probe(containers, bundle)["umask"] == 0o027


def test_default_umask_is_0022(containers: Containers) -> None:
    assert run_probe(containers, containers.bundle())["umask"] == 0o022


def test_capability_sets(containers: Containers) -> None:
    # For uid 0 the kernel recomputes permitted and effective at execve (root's file capability
    # emulation), capped by noNewPrivileges to what the runtime set as permitted: so after exec
    # effective == permitted == the spec's permitted set.  Bounding, inheritable and ambient
    # pass through unchanged.
    bundle = containers.bundle()
    bundle.process["noNewPrivileges"] = True
    bundle.process["capabilities"] = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"],
    }
    report = run_probe(containers, bundle)
    assert caps_from_mask(report["CapBnd"]) == {
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
    }
    assert caps_from_mask(report["CapEff"]) == {"CAP_CHOWN", "CAP_KILL", "CAP_SETUID"}
    assert caps_from_mask(report["CapPrm"]) == {"CAP_CHOWN", "CAP_KILL", "CAP_SETUID"}
    assert caps_from_mask(report["CapInh"]) == {"CAP_KILL"}
    assert caps_from_mask(report["CapAmb"]) == {"CAP_KILL"}


def test_non_root_user_keeps_ambient_caps(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    caps = ["CAP_NET_BIND_SERVICE"]
    bundle.process["capabilities"] = {
        "bounding": caps,
        "effective": caps,
        "permitted": caps,
        "inheritable": caps,
        "ambient": caps,
    }
    report = run_probe(containers, bundle)
    assert caps_from_mask(report["CapEff"]) == {"CAP_NET_BIND_SERVICE"}
    assert caps_from_mask(report["CapAmb"]) == {"CAP_NET_BIND_SERVICE"}


def test_missing_cap_sys_admin_denies_sethostname(containers: Containers) -> None:
    bundle = containers.bundle()
    assert run_probe(containers, bundle, "try", "sethostname", "x")["errno"] == errno.EPERM
    allowed = containers.bundle()
    allowed.process["capabilities"]["effective"] = ["CAP_SYS_ADMIN"]
    allowed.process["capabilities"]["permitted"] = ["CAP_SYS_ADMIN"]
    allowed.process["capabilities"]["bounding"] = ["CAP_SYS_ADMIN"]
    allowed.process["capabilities"]["ambient"] = []
    assert run_probe(containers, allowed, "try", "sethostname", "x")["ok"] is True


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(containers: Containers, nnp: bool) -> None:
    bundle = containers.bundle()
    bundle.process["noNewPrivileges"] = nnp
    assert run_probe(containers, bundle)["NoNewPrivs"] == ("1" if nnp else "0")


def test_rlimits_lowered(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.process["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
        {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    limits = run_probe(containers, bundle)["rlimits"]
    assert limits["RLIMIT_NOFILE"] == [256, 512]
    assert limits["RLIMIT_NPROC"] == [300, 400]
    assert limits["RLIMIT_CORE"] == [0, 0]


def test_rlimit_above_hard_limit_fails_clearly(runtime: Runtime, containers: Containers) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("the hard nofile limit is unlimited here: nothing to exceed")
    bundle = containers.bundle("/bin/true")
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 10000}]
    bundle.write()
    containers.track(bundle.id)
    result = runtime.create(bundle, check=False)
    assert result.returncode != 0
    assert "rlimit" in result.stderr.lower()


@pytest.mark.kettle_only
def test_rlimit_error_names_the_limit(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/true")
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1 << 30}]
    bundle.write()
    containers.track(bundle.id)
    result = runtime.create(bundle, check=False)
    assert result.returncode == 1
    assert "RLIMIT_NOFILE" in result.stderr


def test_oom_score_adj(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.process["oomScoreAdj"] = 123
    assert run_probe(containers, bundle)["oom_score_adj"] == 123


def test_env_from_exec_and_init_do_not_mix(runtime: Runtime, containers: Containers) -> None:
    bundle = containers.bundle("/bin/sleep", "600")
    bundle.process["env"] = ["PATH=/bin", "INIT_ONLY=1"]
    containers.start(bundle)
    report = parse_json_line(
        runtime("exec", "--env", "EXEC_ONLY=1", bundle.id, "/bin/probe").stdout
    )
    assert "EXEC_ONLY=1" in report["env"]
    assert "INIT_ONLY=1" in report["env"]  # exec inherits the spec's env, like runc


# ---- seccomp ----------------------------------------------------------------------------------

ARCHES = {"x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]}.get(
    platform.machine(), []
)


def seccomp(*rules: dict[str, object], default: str = "SCMP_ACT_ALLOW") -> dict[str, object]:
    return {"defaultAction": default, "architectures": ARCHES, "syscalls": list(rules)}


def test_seccomp_errno_default_eperm(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.linux["seccomp"] = seccomp({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"})
    result = run_probe(containers, bundle, "try", "mkdir", "/tmp/denied")
    assert (result["ok"], result["errno"]) == (False, errno.EPERM)


def test_seccomp_errno_ret(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.linux["seccomp"] = seccomp(
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}
    )
    assert run_probe(containers, bundle, "try", "mkdir", "/tmp/denied")["errno"] == errno.EXDEV


def test_seccomp_allows_other_syscalls_and_reports_filter_mode(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.linux["seccomp"] = seccomp({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"})
    assert run_probe(containers, bundle, "try", "syscall", "getpid")["ok"] is True
    again = containers.bundle()
    again.linux["seccomp"] = seccomp({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"})
    assert run_probe(containers, again)["Seccomp"] == "2"


@pytest.mark.kettle_only
def test_seccomp_program_compiled_once_then_loaded_from_the_state_root(
    runtime: Runtime, containers: Containers
) -> None:
    assert runtime.root is not None
    cache = runtime.root / "@seccomp"
    profile = seccomp({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77})
    counts = []
    for _ in range(2):
        bundle = containers.bundle()
        bundle.linux["seccomp"] = profile
        result = run_probe(containers, bundle, "try", "mkdir", "/tmp/denied")
        assert (result["ok"], result["errno"]) == (False, 77)
        counts.append(len(list(cache.glob("*.bpf"))))
    assert counts[0] == counts[1] >= 1  # the second container found the first's program
    assert "@seccomp" not in runtime("list", "-q").stdout


def test_seccomp_argument_condition(containers: Containers) -> None:
    # personality(0xffffffff) is denied, any other argument allowed.
    rule = {
        "names": ["personality"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": errno.EACCES,
        "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}],
    }
    bundle = containers.bundle()
    bundle.linux["seccomp"] = seccomp(rule)
    assert run_probe(containers, bundle, "try", "syscall", "personality")["errno"] == errno.EACCES


def test_seccomp_several_rules(containers: Containers) -> None:
    bundle = containers.bundle(
        "/bin/sh", "-c", "/bin/probe try mkdir /x; /bin/probe try sethostname y"
    )
    bundle.linux["seccomp"] = seccomp(
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
        {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
    )
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["errno"] == errno.EXDEV
    assert second["errno"] == errno.EACCES


def test_seccomp_kill_action(containers: Containers) -> None:
    bundle = containers.bundle("/bin/probe", "try", "syscall", "getcwd")
    bundle.linux["seccomp"] = seccomp({"names": ["getcwd"], "action": "SCMP_ACT_KILL"})
    result = containers.run(bundle)
    assert result.returncode == 128 + signal.SIGSYS, result.describe()


def test_seccomp_unknown_syscall_name_is_rejected_or_ignored(
    runtime: Runtime, containers: Containers
) -> None:
    # runc ignores names libseccomp does not know; either way the container must still run.
    bundle = containers.bundle("/bin/true")
    bundle.linux["seccomp"] = seccomp(
        {"names": ["no_such_syscall_kettle"], "action": "SCMP_ACT_ERRNO"}
    )
    result = containers.run(bundle)
    assert result.returncode in (0, 1)


# ---- runtime-spec fields newer than runc 1.1.5 ------------------------------------------------


@pytest.mark.kettle_only
def test_personality_linux32(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.linux["personality"] = {"domain": "LINUX32"}
    assert run_probe(containers, bundle)["personality"] & 0xFF == 0x0008


@pytest.mark.kettle_only
def test_io_priority(containers: Containers) -> None:
    bundle = containers.bundle()
    bundle.process["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 5}
    assert run_probe(containers, bundle)["ioprio"] == (2 << 13) | 5


@pytest.mark.parametrize("how", ["run", "create+start"])
def test_container_starts_with_no_ignored_signals(
    runtime: Runtime, containers: Containers, how: str
) -> None:
    # Python ignores SIGPIPE and SIGXFSZ, and ignored dispositions survive execve: the runtime
    # must reset them, or `yes | head` style pipelines in the container never end.  cat, not
    # a shell: a busybox shell as pid 1 ignores SIGQUIT itself.
    bundle = containers.bundle("/bin/cat", "/proc/self/status")
    if how == "run":
        result = containers.run(bundle)
        assert result.returncode == 0, result.describe()
        out = result.stdout
    else:
        containers.start(bundle)
        runtime.wait_status(bundle.id, "stopped")
        out = (bundle.path / "create.out").read_text()
    ignored = [line for line in out.splitlines() if line.startswith("SigIgn:")]
    assert ignored == ["SigIgn:\t0000000000000000"]


def test_home_comes_from_passwd_when_unset(containers: Containers) -> None:
    # The environment as exec'd, read without a shell (which might invent HOME itself).
    bundle = containers.bundle("/bin/cat", "/proc/self/environ")
    bundle.process["env"] = ["PATH=/bin"]
    bundle.process["user"] = {"uid": 0, "gid": 0}
    result = containers.run(bundle)
    assert result.returncode == 0, result.describe()
    assert sorted(result.stdout.strip("\0").split("\0")) == ["HOME=/root", "PATH=/bin"]
