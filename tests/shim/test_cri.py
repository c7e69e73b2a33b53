"""Kubernetes' path: containerd's CRI plugin with a `kettle` runtime handler runs a pod
sandbox and a container in it, driven through CRI gRPC calls (runtime.v1, the API containerd
1.6 serves; its descriptor comes from the installed containerd binary).

Host network (a loopback-only CNI setup makes containerd 1.6 fail pod networking) and
`restrict_oom_score_adj` (the pause container asks for -998, which needs CAP_SYS_RESOURCE),
as machine-notes.md explains.  The handler's options name a runtime config file, so the
runtime state lives in the test's directory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shim.conftest import need_peers
from tests.shim.ctd import Containerd
from tests.shim.image import IMAGE_NAME, PAUSE_NAME

pytestmark = [pytest.mark.peers, pytest.mark.privileged]

K8S = "k8s.io"
NODE = 2  # NamespaceMode.NODE: the host's network namespace


def cri_config(base: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""
[{cri}]
  sandbox_image = "{PAUSE_NAME}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{base}/cni"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [{cri}.containerd.runtimes.kettle]
      runtime_type = "io.containerd.kettle.v2"
      [{cri}.containerd.runtimes.kettle.options]
        ConfigPath = "{base}/kettle.toml"
"""


@pytest.fixture(scope="module")
def cri_env(busybox_archive: Path) -> Iterator[tuple[Containerd, object]]:
    need_peers()
    try:
        import grpc  # noqa: F401
        from google.protobuf import descriptor_pb2  # noqa: F401
    except ImportError:
        pytest.skip("the CRI client needs grpcio and protobuf (pip install grpcio protobuf)")
    from tests.shim.cri import Cri, cri_descriptor

    if cri_descriptor() is None:
        pytest.skip("this containerd binary has no runtime.v1 CRI API descriptor")
    ctd = Containerd(cri=True)
    ctd.extra_config = cri_config(ctd.base)
    (ctd.base / "cni").mkdir()
    (ctd.base / "kettle.toml").write_text(f'Root = "{ctd.base}/kettle-root"\n')
    ctd.foreign_namespaces.append(K8S)
    client = None
    problems: list[str] = []
    try:
        ctd.start()
        ctd.ctr("images", "import", str(busybox_archive), namespace=K8S)
        client = Cri(ctd.address)
        yield ctd, client
    finally:
        if client is not None:
            client.close()
        problems = ctd.stop()
    assert problems == [], problems


def test_cri_runs_a_pod_and_a_container_with_the_kettle_handler(
    cri_env: tuple[Containerd, object], tmp_path: Path
) -> None:
    from tests.shim.cri import Cri

    ctd, client = cri_env
    assert isinstance(client, Cri)
    version = client.call("Version", {})
    assert version["runtime_name"] == "containerd"
    # The image must be visible to CRI (it learns of ctr's import through events).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = client.call("ListImages", {})
        tags = [t for img in listed.get("images", []) for t in img.get("repo_tags", [])]
        if IMAGE_NAME in tags and PAUSE_NAME in tags:
            break
        time.sleep(0.2)
    uid = uuid.uuid4().hex[:8]
    parent = f"/kettle-cri-{uid}"
    ctd.cgroup_tops.append(parent.strip("/"))
    logs = tmp_path / "logs"
    logs.mkdir()
    sandbox_config = {
        "metadata": {"name": f"pod-{uid}", "uid": uid, "namespace": "default", "attempt": 0},
        "log_directory": str(logs),
        "linux": {
            "cgroup_parent": parent,
            "security_context": {"namespace_options": {"network": NODE}},
        },
    }
    pod = client.call("RunPodSandbox", {"config": sandbox_config, "runtime_handler": "kettle"})[
        "pod_sandbox_id"
    ]
    container = ""
    try:
        status = client.call("PodSandboxStatus", {"pod_sandbox_id": pod})["status"]
        assert status["state"] == "SANDBOX_READY"
        container = client.call(
            "CreateContainer",
            {
                "pod_sandbox_id": pod,
                "config": {
                    "metadata": {"name": "main"},
                    "image": {"image": IMAGE_NAME},
                    "command": ["sh", "-c", "echo hello-cri; exec sleep 100000"],
                    "log_path": "main.log",
                    "linux": {},
                },
                "sandbox_config": sandbox_config,
            },
        )["container_id"]
        client.call("StartContainer", {"container_id": container})
        st = client.call("ContainerStatus", {"container_id": container})["status"]
        assert st["state"] == "CONTAINER_RUNNING"
        deadline = time.monotonic() + 20
        log_file = logs / "main.log"
        while time.monotonic() < deadline and "hello-cri" not in (
            log_file.read_text() if log_file.exists() else ""
        ):
            time.sleep(0.1)
        assert " stdout F hello-cri" in log_file.read_text()
        # The pod's containers share the sandbox's shim (io.kubernetes.cri.sandbox-id).
        bundles = ctd.base / "state" / "io.containerd.runtime.v2.task" / K8S
        assert (bundles / pod / "address").read_text() == (
            bundles / container / "address"
        ).read_text()
        assert len(ctd.shim_pids()) == 1
        # The runtime state went where the handler's ConfigPath put it.
        assert (ctd.base / "kettle-root" / K8S / container).is_dir()
        out = client.call(
            "ExecSync",
            {"container_id": container, "cmd": ["sh", "-c", "echo exec-ok; exit 3"], "timeout": 30},
        )
        assert out.get("exit_code") == 3
        import base64

        assert base64.b64decode(out["stdout"]) == b"exec-ok\n"
        client.call(
            "UpdateContainerResources",
            {"container_id": container, "linux": {"memory_limit_in_bytes": str(96 << 20)}},
        )
        task_pid = next(
            int(line.split()[1])
            for line in ctd.ctr("tasks", "ls", namespace=K8S).stdout.splitlines()[1:]
            if line.split()[0] == container
        )
        from kettle.shim.oom import memory_cgroup

        found = memory_cgroup(task_pid)
        assert found is not None
        kind, cgroup_dir = found
        limit_file = "memory.limit_in_bytes" if kind == "v1" else "memory.max"
        assert Path(cgroup_dir, limit_file).read_text().strip() == str(96 << 20)
        stats = client.call("ContainerStats", {"container_id": container})["stats"]
        assert int(stats["memory"]["working_set_bytes"]["value"]) > 0, stats
        client.call("StopContainer", {"container_id": container, "timeout": 2})
        st = client.call("ContainerStatus", {"container_id": container})["status"]
        assert st["state"] == "CONTAINER_EXITED"
        # The pid namespace is the pod's (CRI's default mode, POD): sleep is not its pid 1
        # and dies of the stop signal.
        assert st["exit_code"] == 143, st
        client.call("RemoveContainer", {"container_id": container})
        container = ""
    finally:
        if container:
            client.call("RemoveContainer", {"container_id": container})
        client.call("StopPodSandbox", {"pod_sandbox_id": pod})
        client.call("RemovePodSandbox", {"pod_sandbox_id": pod})
    deadline = time.monotonic() + 10
    while ctd.shim_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ctd.shim_pids() == []
