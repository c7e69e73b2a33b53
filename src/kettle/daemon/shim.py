"""Starting and talking to containerd-shim-kettle-v2, the way containerd does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

from kettle.errors import Internal, KettleError, NotFound, Unavailable
from kettle.proto import any_pb, empty_pb, mount_pb, task_pb
from kettle.ttrpc import Client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.daemon.stdio import ContainerIO

SHIM_BINARY = "containerd-shim-kettle-v2"
_LINGER_S = "30"
_TASK = "containerd.task.v2.Task"
_NS_KEY = "containerd-namespace-ttrpc"
#: the Any type of an exec's process spec (JSON), as containerd sends it.
PROCESS_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"


def shim_binary() -> str:
    """The shim next to our interpreter (a venv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), SHIM_BINARY)
    if os.access(here, os.X_OK):
        return here
    found = shutil.which(SHIM_BINARY)
    if not found:
        raise Unavailable(f"{SHIM_BINARY} not found next to {sys.executable} or on PATH")
    return found


#: (namespace, runtime) -> the address of the shared shim last started for them.
_shared: dict[tuple[str, str], str] = {}
_shared_lock = threading.Lock()


def start(
    namespace: str, events_address: str, container_id: str, bundle: str, runtime: str = ""
) -> str:
    """The address of a shim that takes the container: the shared shim kettled already knows,
    when it admits one more (`kettle.shim.v1.Pool/Admit`, exactly what `shim start` asks it),
    else `shim start` run in the bundle.  Skipping a `shim start` process saves a Python start
    per container (and per restart of a crash-looping one).  runtime: the OCI runtime binary
    the shim runs (runc, crun...); "": kettle's own, in the shim's process."""
    from kettle.shim import address as shim_address
    from kettle.shim import pool
    from kettle.shim.config import from_environment
    from kettle.shim.start import annotations_of

    cfg = from_environment()
    if cfg.grouping != "pool" or shim_address.annotated_group(annotations_of(bundle)):
        # A shim of its own, or its group's: where `shim start` alone decides.
        return _run_start(namespace, events_address, container_id, bundle, runtime)
    key = (namespace, runtime)
    with _shared_lock:
        known = _shared.get(key)
    if known is not None:
        try:
            answer = pool.admit(shim_address.from_address(known), container_id, cfg.pool_size)
        except Unavailable:
            answer = pool.STOPPING
        if answer == pool.ADMITTED:
            shim_address.write_address_file(bundle, known)
            return known
    address = _run_start(namespace, events_address, container_id, bundle, runtime)
    with _shared_lock:
        _shared[key] = address
    return address


def _run_start(
    namespace: str, events_address: str, container_id: str, bundle: str, runtime: str
) -> str:
    """Run `shim start` in the bundle; the ttrpc address it prints."""
    argv = [
        shim_binary(),
        "-namespace",
        namespace,
        "-address",
        events_address,
        "-publish-binary",
        "",
        "-id",
        container_id,
        "start",
    ]
    env = dict(os.environ, TTRPC_ADDRESS=events_address)
    # The shared shim stays a while after its last container: a container restarting after a
    # back-off, or the next `kctl run`, then finds it up instead of starting a new one.
    env.setdefault("KETTLE_SHIM_LINGER", _LINGER_S)
    if runtime:
        env["KETTLE_SHIM_BINARY"] = runtime
    res = subprocess.run(
        argv, cwd=bundle, env=env, input=b"", capture_output=True, timeout=60, check=False
    )
    out = (res.stdout + res.stderr).decode(errors="replace").strip()
    if res.returncode != 0 or not out.startswith("unix://"):
        raise Internal(f"container {container_id}: shim start failed: {out or res.returncode}")
    return out


def delete(namespace: str, events_address: str, container_id: str, bundle: str) -> None:
    """`shim delete`: containerd's cleanup after a lost shim."""
    argv = [shim_binary(), "-namespace", namespace, "-address", events_address]
    argv += ["-id", container_id, "-bundle", bundle, "delete"]
    res = subprocess.run(argv, cwd=bundle, capture_output=True, timeout=60, check=False)
    if res.returncode != 0:
        text = res.stderr.decode(errors="replace").strip()
        raise Internal(f"container {container_id}: shim delete failed: {text}")


class Task:
    """One container's task in a shim (a connection of its own, so Wait can block)."""

    def __init__(self, address: str, namespace: str, container_id: str) -> None:
        self.address = address
        self.id = container_id
        self.client = Client.connect(address, timeout=10, metadata={_NS_KEY: namespace})

    def close(self) -> None:
        self.client.close()

    def create(self, bundle: str, rootfs: list[mount_pb.Mount], io: ContainerIO) -> int:
        req = task_pb.CreateTaskRequest(
            id=self.id,
            bundle=bundle,
            rootfs=rootfs,
            stdin=io.stdin_path,
            stdout=io.stdout_path,
            stderr=io.stderr_path,
            terminal=io.terminal,
        )
        return self.client.call(_TASK, "Create", req, task_pb.CreateTaskResponse, timeout=60).pid

    def start(self, exec_id: str = "") -> int:
        req = task_pb.StartRequest(id=self.id, exec_id=exec_id)
        return self.client.call(_TASK, "Start", req, task_pb.StartResponse, timeout=60).pid

    def state(self, exec_id: str = "") -> task_pb.StateResponse:
        req = task_pb.StateRequest(id=self.id, exec_id=exec_id)
        return self.client.call(_TASK, "State", req, task_pb.StateResponse, timeout=10)

    def wait(self, exec_id: str = "") -> int:
        req = task_pb.WaitRequest(id=self.id, exec_id=exec_id)
        return self.client.call(_TASK, "Wait", req, task_pb.WaitResponse).exit_status

    def kill(self, sig: int, all_: bool = False, exec_id: str = "") -> None:
        req = task_pb.KillRequest(id=self.id, exec_id=exec_id, signal=sig, all=all_)
        try:
            self.client.call(_TASK, "Kill", req, empty_pb.Empty, timeout=10)
        except NotFound:
            pass  # it exited already: what the caller wanted

    def delete(self, exec_id: str = "") -> None:
        req = task_pb.DeleteRequest(id=self.id, exec_id=exec_id)
        try:
            self.client.call(_TASK, "Delete", req, task_pb.DeleteResponse, timeout=30)
        except NotFound:
            pass  # already gone from the shim

    def exec(
        self,
        exec_id: str,
        process: dict[str, object],
        *,
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
        terminal: bool = False,
    ) -> None:
        """Add a process (an OCI process object) to the running container; Start runs it."""
        import json

        spec = any_pb.Any(type_url=PROCESS_TYPE, value=json.dumps(process).encode())
        req = task_pb.ExecProcessRequest(
            id=self.id,
            exec_id=exec_id,
            terminal=terminal,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            spec=spec,
        )
        self.client.call(_TASK, "Exec", req, empty_pb.Empty, timeout=30)

    def resize(self, width: int, height: int, exec_id: str = "") -> None:
        req = task_pb.ResizePtyRequest(id=self.id, exec_id=exec_id, width=width, height=height)
        self.client.call(_TASK, "ResizePty", req, empty_pb.Empty, timeout=10)

    def close_stdin(self, exec_id: str = "") -> None:
        req = task_pb.CloseIORequest(id=self.id, exec_id=exec_id, stdin=True)
        self.client.call(_TASK, "CloseIO", req, empty_pb.Empty, timeout=10)

    def pids(self) -> list[int]:
        req = task_pb.PidsRequest(id=self.id)
        resp = self.client.call(_TASK, "Pids", req, task_pb.PidsResponse, timeout=30)
        return [p.pid for p in resp.processes]

    def shutdown(self) -> None:
        req = task_pb.ShutdownRequest(id=self.id)
        try:
            self.client.call(_TASK, "Shutdown", req, empty_pb.Empty, timeout=5)
        except KettleError:
            pass  # the shim exits by itself once it has no container left


def release(address: str, namespace: str) -> None:
    """Ask a shim to exit now if it has nothing to run (a lingering one); one that still runs
    containers ignores it.  Used when kettled stops."""
    try:
        client = Client.connect(address, timeout=2, metadata={_NS_KEY: namespace})
    except KettleError:
        return  # gone already
    try:
        req = task_pb.ShutdownRequest(id="", now=True)
        client.call(_TASK, "Shutdown", req, empty_pb.Empty, timeout=5)
    except KettleError:
        pass  # exiting, or busy: either way nothing to do
    finally:
        client.close()
