"""Operations on an existing container: start, state, kill, delete, pause, resume, update."""

from __future__ import annotations

import os

from kettle.errors import FailedPrecondition, InvalidArgument, NotFound, oserror_text
from kettle.runtime import hooks
from kettle.runtime.context import Context
from kettle.runtime.state import (
    EXEC_SOCK,
    ContainerState,
    Status,
    check_transition,
    current_status,
    exec_sock_path,
    is_alive,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

if TYPE_CHECKING:
    import signal
else:
    # The C module: signal.py wraps it in enums, which cost ~4 ms on every runtime start.
    import _signal as signal


def manager_of(st: ContainerState) -> Any:
    if not st.cgroup:
        return None
    from kettle import cgroups

    return cgroups.from_state(st.cgroup)


def status_of(st: ContainerState) -> Status:
    frozen = None
    if st.status in (Status.RUNNING.value, Status.PAUSED.value) and is_alive(st.pid, st.pid_start):
        mgr = manager_of(st)
        frozen = bool(mgr is not None and mgr.exists() and mgr.is_frozen())
    return current_status(st, frozen)


def state(ctx: Context, container_id: str) -> dict[str, Any]:
    """runc's `state` object."""
    st = ctx.store.load(container_id)
    status = status_of(st)
    out: dict[str, Any] = {
        "ociVersion": st.config.get("ociVersion", "1.0.2"),
        "id": st.id,
        "pid": st.pid if status is not Status.STOPPED else 0,
        "status": status.value,
        "bundle": st.bundle,
        "rootfs": st.rootfs,
        "created": st.created,
        "owner": st.owner,
    }
    if st.annotations:
        out["annotations"] = st.annotations
    return out


def list_states(ctx: Context) -> list[dict[str, Any]]:
    out = []
    for cid in ctx.store.ids():
        try:
            out.append(state(ctx, cid))
        except NotFound:
            continue  # deleted while we listed: not an error for `list`
    return out


def start(ctx: Context, container_id: str) -> None:
    store = ctx.store
    with store.locked(container_id):
        st = store.load(container_id)
        check_transition(container_id, "start", status_of(st))
        import _socket as socket  # only start needs it; the C module, ~4 ms cheaper

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        dir_fd = os.open(store.dir(container_id), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sock.connect(exec_sock_path(dir_fd))
        except OSError as e:
            sock.close()
            raise FailedPrecondition(
                f"cannot start container {container_id}: {oserror_text(e)}"
            ) from None
        finally:
            os.close(dir_fd)
        # The init execs with this connection close-on-exec: EOF means the program runs, a
        # message means it failed first.
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        sock.close()
        try:
            os.unlink(os.path.join(store.dir(container_id), EXEC_SOCK))
        except FileNotFoundError:
            pass  # a concurrent start removed it
        if chunks:
            from kettle.runtime import jsonio as json
            from kettle.runtime.create import error_from_child

            raise error_from_child(json.loads(b"".join(chunks)))
        st.status = Status.RUNNING.value
        store.save(st)
    hooks.run(st.config.get("hooks"), "poststart", st.oci_state(Status.RUNNING), ctx.logger.warning)


_SIGNALS = {
    name[3:]: int(getattr(signal, name))
    for name in dir(signal)
    if name.startswith("SIG")
    and not name.startswith("SIG_")
    and isinstance(getattr(signal, name), int)
}


def parse_signal(text: str) -> int:
    """A number, or a name with or without SIG, any case (runc accepts all of them)."""
    if text.isdigit():
        num = int(text)
        if not 0 < num < 65:
            raise InvalidArgument(f"invalid signal: {text}")
        return num
    name = text.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name.startswith("RTMIN+") or name.startswith("RTMAX-"):
        base = signal.SIGRTMIN if name.startswith("RTMIN") else signal.SIGRTMAX
        off = int(name[6:])
        return int(base) + off if name.startswith("RTMIN") else int(base) - off
    if name not in _SIGNALS:
        raise InvalidArgument(f"unknown signal {text!r}")
    return _SIGNALS[name]


def kill(ctx: Context, container_id: str, sig: int, all_processes: bool = False) -> None:
    st = ctx.store.load(container_id)
    status = status_of(st)
    check_transition(container_id, "kill", status)
    if all_processes:
        mgr = manager_of(st)
        if mgr is not None and mgr.exists():
            mgr.kill_all(sig)
            return
    try:
        fd = _pidfd(st)
        from kettle import syscalls as sc

        try:
            sc.pidfd_send_signal(fd, sig)
        finally:
            os.close(fd)
    except ProcessLookupError:
        raise FailedPrecondition(f"container not running: {container_id}") from None


def _pidfd(st: ContainerState) -> int:
    """A pidfd for the init, checked against its start time so a reused pid is never hit."""
    from kettle import syscalls as sc
    from kettle.errors import SyscallError

    try:
        fd = sc.pidfd_open(st.pid)
    except SyscallError:
        raise ProcessLookupError(st.pid) from None
    if not is_alive(st.pid, st.pid_start):
        os.close(fd)
        raise ProcessLookupError(st.pid)
    return fd


def delete(ctx: Context, container_id: str, force: bool = False) -> None:
    store = ctx.store
    try:
        st = store.load(container_id)
    except NotFound:
        if force:
            # runc removes a stale directory left by a failed create and succeeds.
            try:
                store.remove(container_id)
            except OSError:
                pass  # nothing there to remove: exactly what --force asks for
            return
        raise
    status = status_of(st)
    if status is not Status.STOPPED:
        # Without --force only a created container may go (runc); with it, anything,
        # including one whose create was interrupted (still "creating").
        if not force:
            check_transition(container_id, "delete", status)
        _kill_everything(st)
    _destroy(ctx, st)


def _kill_everything(st: ContainerState) -> None:
    from kettle.runtime.create import wait_gone

    mgr = manager_of(st)
    if mgr is not None and mgr.exists():
        if mgr.is_frozen():
            mgr.kill_all(signal.SIGKILL)
            mgr.thaw()
        else:
            mgr.kill_all(signal.SIGKILL)
    try:
        fd = _pidfd(st)
        from kettle import syscalls as sc

        try:
            sc.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            os.close(fd)
    except ProcessLookupError:
        pass  # already dead: what we wanted
    wait_gone(st.pid, st.pid_start)


def _destroy(ctx: Context, st: ContainerState) -> None:
    mgr = manager_of(st)
    if mgr is not None:
        # Without a pid namespace, children of the init may outlive it: they go too.
        if mgr.exists() and mgr.pids():
            mgr.kill_all(signal.SIGKILL)
        mgr.destroy()
    ctx.store.remove(st.id)
    hooks.run(st.config.get("hooks"), "poststop", st.oci_state(Status.STOPPED), ctx.logger.warning)


def pause(ctx: Context, container_id: str) -> None:
    st = ctx.store.load(container_id)
    check_transition(container_id, "pause", status_of(st))
    mgr = manager_of(st)
    if mgr is None:
        raise FailedPrecondition(f"container {container_id} has no cgroup to freeze")
    mgr.freeze()


def resume(ctx: Context, container_id: str) -> None:
    st = ctx.store.load(container_id)
    check_transition(container_id, "resume", status_of(st))
    manager_of(st).thaw()


def update(ctx: Context, container_id: str, resources: Mapping[str, Any]) -> None:
    store = ctx.store
    with store.locked(container_id):
        st = store.load(container_id)
        check_transition(container_id, "update", status_of(st))
        mgr = manager_of(st)
        if mgr is None:
            raise FailedPrecondition(f"container {container_id} has no cgroup to update")
        linux = st.config.get("linux") or {}
        merged = merge_resources(linux.get("resources") or {}, resources)
        mgr.set(merged)
        st.config.setdefault("linux", {})["resources"] = merged
        store.save(st)


def merge_resources(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay new on old one level deep, as runc's update does."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in old.items()}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def pids(ctx: Context, container_id: str) -> list[int]:
    st = ctx.store.load(container_id)
    mgr = manager_of(st)
    if mgr is not None and mgr.exists():
        return sorted(mgr.pids())
    return [st.pid] if is_alive(st.pid, st.pid_start) else []


def stats(ctx: Context, container_id: str) -> dict[str, Any]:
    st = ctx.store.load(container_id)
    if status_of(st) is Status.STOPPED:
        raise FailedPrecondition(f"container not running: {container_id}")
    mgr = manager_of(st)
    if mgr is None:
        return {}
    data: dict[str, Any] = mgr.stats()
    return data


def oom_count(ctx: Context, container_id: str) -> int:
    st = ctx.store.load(container_id)
    mgr = manager_of(st)
    return int(mgr.oom_kill_count()) if mgr is not None and mgr.exists() else 0
