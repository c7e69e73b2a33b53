"""containerd 1.6 (`ctr`) driving containerd-shim-kettle-v2 end to end.

Every test runs containers of the locally built busybox image through a private containerd
(tests/shim/ctd.py) with `--runtime io.containerd.kettle.v2`; the module's teardown fails if
anything (task, shim, mount, cgroup, runtime state) was left behind.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.shim.ctd import RUNTIME, Containerd
from tests.shim.image import IMAGE_NAME

pytestmark = [pytest.mark.peers, pytest.mark.privileged]


def cid() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def run(
    ctd: Containerd, *args: str, flags: tuple[str, ...] = (), input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """`ctr run --runtime kettle --rm [flags] IMAGE ID args...`"""
    return ctd.ctr(
        "run",
        "--runtime",
        RUNTIME,
        "--rm",
        *flags,
        IMAGE_NAME,
        cid(),
        *args,
        input=input,
        check=False,
        timeout=120,
    )


def detached(ctd: Containerd, name: str, *args: str, flags: tuple[str, ...] = ()) -> None:
    ctd.ctr("run", "--runtime", RUNTIME, "-d", *flags, IMAGE_NAME, name, *args, timeout=120)


def task_status(ctd: Containerd, name: str) -> str:
    for line in ctd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == name:
            return fields[-1]
    return ""


def wait_status(ctd: Containerd, name: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if task_status(ctd, name) == status:
            return
        time.sleep(0.05)
    pytest.fail(f"task {name} is {task_status(ctd, name)!r}, not {status}")


def remove(ctd: Containerd, name: str) -> None:
    ctd.ctr("tasks", "kill", "-s", "KILL", name, check=False)
    for _ in range(100):
        if ctd.ctr("tasks", "delete", name, check=False).returncode == 0:
            break
        time.sleep(0.05)
    ctd.ctr("containers", "rm", name, check=False)


def test_run_rm_prints_hi(containerd: Containerd) -> None:
    res = run(containerd, "echo", "hi")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hi\n"
    assert containerd.ctr("containers", "ls", "-q").stdout.strip() == ""


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("trap 'exit 42' TERM; kill $$; sleep 5", 42),
    ],
)
def test_exit_codes_propagate(containerd: Containerd, script: str, code: int) -> None:
    res = run(containerd, "sh", "-c", script)
    assert res.returncode == code, res.stderr


def test_killed_init_reports_128_plus_signal(containerd: Containerd) -> None:
    name = cid()
    proc = subprocess.Popen(
        containerd.ctr_argv("run", "--runtime", RUNTIME, "--rm", IMAGE_NAME, name, "sleep", "1000"),
        env=containerd.env(),
    )
    try:
        wait_status(containerd, name, "RUNNING")
        containerd.ctr("tasks", "kill", "-s", "KILL", name)
        assert proc.wait(60) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stdout_and_stderr_are_separate(containerd: Containerd) -> None:
    res = run(containerd, "sh", "-c", "echo out; echo err >&2")
    assert (res.stdout, res.stderr) == ("out\n", "err\n")


def test_stdin_reaches_the_container(containerd: Containerd) -> None:
    payload = b"".join(b"line %d\n" % i for i in range(5000))  # > a pipe buffer
    res = run(containerd, "sh", "-c", "wc -c; echo done", input=payload)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(len(payload)), "done"]


def test_signals_are_ignored_only_as_the_spec_says(containerd: Containerd) -> None:
    # Python ignores SIGPIPE; a container must start with default dispositions.
    res = run(containerd, "grep", "SigIgn", "/proc/self/status")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["SigIgn:", "0000000000000000"]


def in_pty(ctd: Containerd, argv: list[str], reply: bytes = b"") -> tuple[int, str]:
    """Run ctr under `script` (a pty of 23 rows, 91 columns); once the output shows the
    size, type `reply`.  Returns (exit status, output)."""
    cmd = " ".join(ctd.ctr_argv(*argv))
    proc = subprocess.Popen(
        ["script", "-qfec", f"stty cols 91 rows 23; {cmd}", "/dev/null"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=ctd.env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    sent = not reply
    while time.monotonic() < deadline:
        if not sent and b"23 91" in out:
            proc.stdin.write(reply)
            proc.stdin.flush()
            sent = True
        if not sel.select(0.2):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        out += chunk
    sel.close()
    proc.wait(30)
    proc.stdin.close()
    proc.stdout.close()
    return proc.returncode, out.decode(errors="replace")


def test_tty(containerd: Containerd) -> None:
    script = "tty; stty size; read line; echo got:$line"
    argv = ["run", "--runtime", RUNTIME, "--rm", "-t", IMAGE_NAME, cid(), "sh", "-c", script]
    code, text = in_pty(containerd, argv, b"hello\n")
    assert re.search(r"/dev/pts/\d+", text), text
    assert "23 91" in text, text
    assert "got:hello" in text, text
    assert code == 0, text


def test_detached_exec_ps_pause_metrics_kill_delete(containerd: Containerd) -> None:
    name = cid()
    detached(containerd, name, "sleep", "1000")
    try:
        wait_status(containerd, name, "RUNNING")
        res = containerd.ctr(
            "tasks",
            "exec",
            "--exec-id",
            "e1",
            name,
            "sh",
            "-c",
            "echo from-exec; exit 4",
            check=False,
        )
        assert (res.returncode, res.stdout) == (4, "from-exec\n"), res.stderr
        code, text = in_pty(
            containerd,
            ["tasks", "exec", "-t", "--exec-id", "t1", name, "sh", "-c", "tty; stty size; exit 6"],
        )
        assert code == 6 and re.search(r"/dev/pts/\d+", text) and "23 91" in text, text
        containerd.ctr("tasks", "exec", "-d", "--exec-id", "e2", name, "sleep", "1000")
        dup = containerd.ctr("tasks", "exec", "--exec-id", "e2", name, "true", check=False)
        assert dup.returncode != 0
        assert "already exists" in dup.stderr, dup.stderr
        ps = containerd.ctr("tasks", "ps", name).stdout
        pids = [int(line.split()[0]) for line in ps.splitlines()[1:] if line.strip()]
        assert len(pids) == 2, ps
        assert "e2" in ps, ps  # the exec's pid carries its exec id
        containerd.ctr("tasks", "pause", name)
        wait_status(containerd, name, "PAUSED")
        containerd.ctr("tasks", "resume", name)
        wait_status(containerd, name, "RUNNING")
        metrics = containerd.ctr("tasks", "metrics", "--format", "json", name).stdout
        data = json.loads(metrics)
        assert data["memory"]["usage"]["usage"] > 0, data
        assert data["pids"]["current"] == 2, data
        containerd.ctr("tasks", "kill", name)  # SIGTERM: sleep as pid 1 ignores it
        time.sleep(0.3)
        assert task_status(containerd, name) == "RUNNING"
        containerd.ctr("tasks", "kill", "-s", "KILL", name)
        wait_status(containerd, name, "STOPPED")
        again = containerd.ctr("tasks", "kill", "-s", "KILL", name, check=False)
        assert again.returncode != 0
        assert "not found" in again.stderr, again.stderr
        containerd.ctr("tasks", "delete", name)
        assert task_status(containerd, name) == ""
    finally:
        remove(containerd, name)


class EventWatcher:
    """`ctr events` in the background; lines collected without blocking."""

    def __init__(self, ctd: Containerd) -> None:
        self.proc = subprocess.Popen(ctd.ctr_argv("events"), stdout=subprocess.PIPE, env=ctd.env())
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)
        self.buf = b""
        time.sleep(0.5)  # ctr events subscribes asynchronously

    def topics(self, name: str, until: str, timeout: float = 20) -> list[str]:
        """Topics of events naming name, in arrival order, until topic `until` shows up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = []
            for line in self.buf.decode(errors="replace").splitlines():
                if name in line:
                    found += [f for f in line.split() if f.startswith("/tasks/")][:1]
            if until in found:
                return found
            if self.sel.select(0.2):
                self.buf += os.read(self.fd, 65536)
        return found

    def close(self) -> None:
        self.sel.close()
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_events_in_order(containerd: Containerd) -> None:
    watcher = EventWatcher(containerd)
    try:
        name = cid()
        containerd.ctr("run", "--runtime", RUNTIME, "--rm", IMAGE_NAME, name, "true")
        topics = watcher.topics(name, "/tasks/delete")
        assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], topics
    finally:
        watcher.close()


def test_oom_kill_is_reported(containerd: Containerd) -> None:
    watcher = EventWatcher(containerd)
    try:
        name = cid()
        res = containerd.ctr(
            "run",
            "--runtime",
            RUNTIME,
            "--rm",
            "--memory-limit",
            str(16 << 20),
            IMAGE_NAME,
            name,
            "sh",
            "-c",
            "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
            check=False,
            timeout=120,
        )
        assert res.returncode == 137, res.stderr
        topics = watcher.topics(name, "/tasks/delete")
        assert "/tasks/oom" in topics, topics
        assert topics.index("/tasks/oom") < topics.index("/tasks/exit"), topics
    finally:
        watcher.close()


def bundle_address(ctd: Containerd, name: str) -> str:
    path = ctd.base / "state" / "io.containerd.runtime.v2.task" / ctd.namespace / name / "address"
    return path.read_text().strip()


def test_socket_address_follows_containerd_convention(containerd: Containerd) -> None:
    """Our address formula, checked against containerd's own runc shim."""
    from kettle.shim.address import socket_path, to_address

    name = cid()
    containerd.ctr("run", "-d", IMAGE_NAME, name, "sleep", "1000")  # the runc shim
    try:
        got = bundle_address(containerd, name)
        assert got == to_address(socket_path(containerd.address, containerd.namespace, name))
    finally:
        remove(containerd, name)


def shim_count(ctd: Containerd) -> int:
    return len(ctd.shim_pids())


def test_containers_share_a_pool_shim_and_pods_get_their_own(containerd: Containerd) -> None:
    from kettle.shim.address import socket_path, to_address

    a, b, p1, p2 = cid(), cid(), cid(), cid()
    pod = ("--annotation", "io.kubernetes.cri.sandbox-id=pod-" + p1)
    try:
        detached(containerd, a, "sleep", "1000")
        detached(containerd, b, "sleep", "1000")
        detached(containerd, p1, "sleep", "1000", flags=pod)
        detached(containerd, p2, "sleep", "1000", flags=pod)
        pool = to_address(socket_path(containerd.address, containerd.namespace, "kettle-pool-0"))
        assert bundle_address(containerd, a) == bundle_address(containerd, b) == pool
        pod_address = to_address(socket_path(containerd.address, containerd.namespace, "pod-" + p1))
        assert bundle_address(containerd, p1) == bundle_address(containerd, p2) == pod_address
        assert shim_count(containerd) == 2
        # Deleting one container of a shared shim leaves the others served.
        remove(containerd, a)
        assert task_status(containerd, b) == "RUNNING"
        out = containerd.ctr("tasks", "exec", "--exec-id", "x", b, "echo", "still-here").stdout
        assert out == "still-here\n"
    finally:
        for name in (a, b, p1, p2):
            remove(containerd, name)
    deadline = time.monotonic() + 10
    while shim_count(containerd) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shim_count(containerd) == 0


def runtime_config(ctd: Containerd, text: str) -> tuple[str, str]:
    path = ctd.base / f"runtime-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(text)
    return ("--runtime-config-path", str(path))


def test_one_shim_per_container_when_configured(containerd: Containerd) -> None:
    flags = runtime_config(containerd, 'Grouping = "container"\n')
    a, b = cid(), cid()
    try:
        detached(containerd, a, "sleep", "1000", flags=flags)
        detached(containerd, b, "sleep", "1000", flags=flags)
        assert bundle_address(containerd, a) != bundle_address(containerd, b)
        assert shim_count(containerd) == 2
    finally:
        remove(containerd, a)
        remove(containerd, b)


def test_bad_runtime_config_fails_create(containerd: Containerd) -> None:
    flags = runtime_config(containerd, "NoSuchOption = 1\n")
    res = run(containerd, "true", flags=flags)
    assert res.returncode != 0
    assert "NoSuchOption" in res.stderr, res.stderr


@pytest.mark.parametrize("binary", ["runc", "kettle-runtime", "crun"])
def test_runc_compatible_binaries(containerd: Containerd, binary: str) -> None:
    import shutil
    import sys

    from kettle.cgroups.host import detect_mode

    path = shutil.which(binary) or shutil.which(binary, path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip(f"{binary} is not installed")
    if binary == "crun" and detect_mode() == "hybrid":
        pytest.skip("crun 1.8 refuses cgroup hybrid hosts (machine-notes.md)")
    flags = runtime_config(containerd, f'BinaryName = "{path}"\n')
    res = run(containerd, "sh", "-c", "echo hi; exit 5", flags=flags)
    assert (res.returncode, res.stdout) == (5, "hi\n"), res.stderr
    name = cid()
    try:
        detached(containerd, name, "sleep", "1000", flags=flags)
        out = containerd.ctr("tasks", "exec", "--exec-id", "e", name, "echo", "exec-ok").stdout
        assert out == "exec-ok\n"
        code, text = in_pty(containerd, ["tasks", "exec", "-t", "--exec-id", "t", name, "tty"])
        assert code == 0 and re.search(r"/dev/pts/\d+", text), text
        containerd.ctr("tasks", "pause", name)
        wait_status(containerd, name, "PAUSED")
        containerd.ctr("tasks", "resume", name)
        metrics = json.loads(containerd.ctr("tasks", "metrics", "--format", "json", name).stdout)
        assert metrics["pids"]["current"] >= 1, metrics
        ps = containerd.ctr("tasks", "ps", name).stdout
        assert len(ps.splitlines()) == 2, ps
    finally:
        remove(containerd, name)
    bad = runtime_config(containerd, 'BinaryName = "/nonexistent/runc"\n')
    res = run(containerd, "true", flags=bad)
    assert res.returncode != 0 and "/nonexistent/runc" in res.stderr, res.stderr


def test_containers_survive_a_containerd_restart(containerd: Containerd) -> None:
    a, b = cid(), cid()
    try:
        detached(containerd, a, "sleep", "1000")
        detached(
            containerd,
            b,
            "sleep",
            "1000",
            flags=runtime_config(containerd, 'Grouping = "container"\n'),
        )
        shims = sorted(containerd.shim_pids())
        containerd.restart()
        assert sorted(containerd.shim_pids()) == shims
        assert task_status(containerd, a) == "RUNNING"
        assert task_status(containerd, b) == "RUNNING"
        out = containerd.ctr("tasks", "exec", "--exec-id", "e", a, "echo", "after-restart").stdout
        assert out == "after-restart\n"
        watcher = EventWatcher(containerd)
        try:
            containerd.ctr("tasks", "kill", "-s", "KILL", a)
            wait_status(containerd, a, "STOPPED")
            assert "/tasks/exit" in watcher.topics(a, "/tasks/exit")
        finally:
            watcher.close()
        containerd.ctr("tasks", "delete", a)
    finally:
        remove(containerd, a)
        remove(containerd, b)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_shim_is_cleaned_up_by_containerd(containerd: Containerd) -> None:
    from kettle.shim.address import from_address

    name = cid()
    pod = ("--annotation", "io.kubernetes.cri.sandbox-id=alone-" + name)
    detached(containerd, name, "sleep", "1000", flags=pod)
    try:
        sock = from_address(bundle_address(containerd, name))
        (shim,) = [p for p in containerd.shim_pids() if sock and p]  # the only shim
        pids = containerd.ctr("tasks", "ps", name).stdout.split()[2:3]
        init = int(pids[0])
        os.kill(shim, 9)
        # containerd sees the connection drop and runs `shim delete` for the task.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and task_status(containerd, name):
            time.sleep(0.1)
        assert task_status(containerd, name) == ""
        # ... and `shim delete` kills the container (asynchronously to the task list).
        while time.monotonic() < deadline and alive(init):
            time.sleep(0.1)
        assert not alive(init)
        os.unlink(sock)  # the killed shim could not remove it
    finally:
        remove(containerd, name)


def test_log_uri_file_and_binary(containerd: Containerd) -> None:
    out = containerd.base / "file-log.txt"
    res = containerd.ctr(
        "run",
        "--runtime",
        RUNTIME,
        "--rm",
        "--log-uri",
        f"file://{out}",
        IMAGE_NAME,
        cid(),
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    )
    assert res.returncode == 0
    assert sorted(out.read_text().splitlines()) == ["to-err", "to-out"]
    logger = containerd.base / "logger.sh"
    got = containerd.base / "binary-log.txt"
    logger.write_text(
        "#!/bin/sh\n"
        f'echo "id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE args=$*" > {got}\n'
        "exec 5>&-\n"
        f"cat <&3 >> {got} &\ncat <&4 >> {got}\nwait\n"
    )
    logger.chmod(0o755)
    name = cid()
    res = containerd.ctr(
        "run",
        "--runtime",
        RUNTIME,
        "--rm",
        "--log-uri",
        f"binary://{logger}?mode=test",
        IMAGE_NAME,
        name,
        "sh",
        "-c",
        "echo via-binary",
    )
    assert res.returncode == 0
    deadline = time.monotonic() + 10
    while (
        "via-binary" not in (got.read_text() if got.exists() else "")
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    lines = got.read_text().splitlines()
    assert lines[0] == f"id={name} ns={containerd.namespace} args=mode test", lines
    assert "via-binary" in lines
