"""`shim start`: find or start the shim that will serve a container; print its address.

containerd reads this process's stdout and stderr together until EOF, so it prints the
address and nothing else, and the daemon it starts gets /dev/null, never these pipes.

Placement: a container with a group annotation (CRI's sandbox id: one shim per pod) goes to
that group's shim.  Other containers go to their namespace's pool (``grouping = "pool"``, the
default: shims 0, 1, 2, ... each taking up to ``pool_size`` containers) or to a shim of their
own (``grouping = "container"``, containerd's runc-shim behaviour).  A flock on the socket
directory makes the bind-or-join decision atomic between concurrent starts.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import sys
import time

from kettle.errors import FailedPrecondition, KettleError, Unavailable
from kettle.shim import address as addr
from kettle.shim import pool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.shim.config import ShimConfig
    from kettle.shim.flags import Flags

_LOCK_FILE = ".kettle-start.lock"
_MAX_POOLS = 4096
_STOPPING_RETRIES = 200
_STOPPING_SLEEP_S = 0.02


def annotations_of(bundle: str) -> dict[str, str]:
    """The grouping annotations of the bundle's config.json ({} when it names none)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    # Most containers carry no grouping annotation: skip json (and the re and enum modules it
    # imports), which would be the largest cost of this process.
    keys = (addr.SANDBOX_ANNOTATION, *addr.GROUP_ANNOTATIONS)
    if not any(key.encode() in raw for key in keys):
        return {}
    import json

    try:
        config = json.loads(raw)
    except ValueError as e:
        raise FailedPrecondition(f"{bundle}/config.json: {e}") from None
    found = config.get("annotations") if isinstance(config, dict) else None
    return {str(k): str(v) for k, v in (found or {}).items()}


def groups(container_id: str, annotations: dict[str, str], cfg: ShimConfig) -> list[str]:
    """The groups to try, in order (several only for pools)."""
    explicit = addr.annotated_group(annotations)
    if explicit:
        return [explicit]
    if cfg.grouping == "container":
        return [container_id]
    return [f"kettle-pool-{n}" for n in range(_MAX_POOLS)]


def _bind(path: str) -> _socket.socket | None:
    """A new listening socket at path, or None when one is in use there already.

    (_socket, not socket: the wrapper module's import costs more than this whole step.)"""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            return None
        raise
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def place(
    flags: Flags, cfg: ShimConfig, annotations: dict[str, str]
) -> tuple[str, _socket.socket | None]:
    """(socket path, listener to hand to a new daemon or None when joining a shim)."""
    os.makedirs(addr.SOCKET_DIR, mode=0o711, exist_ok=True)
    lock = os.open(
        os.path.join(addr.SOCKET_DIR, _LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        limit = cfg.pool_size if cfg.grouping == "pool" else 0
        for group in groups(flags.id, annotations, cfg):
            path = addr.socket_path(flags.address, flags.namespace, group)
            for _ in range(_STOPPING_RETRIES):
                sock = _bind(path)
                if sock is not None:
                    return path, sock
                try:
                    verdict = pool.admit(
                        path, flags.id, limit if group.startswith("kettle-pool-") else 0
                    )
                except Unavailable:
                    # Nobody listens there: a shim died without removing its socket.
                    os.unlink(path)
                    continue
                if verdict == pool.ADMITTED:
                    return path, None
                if verdict == pool.FULL:
                    break
                time.sleep(_STOPPING_SLEEP_S)  # stopping: it removes its socket shortly
            else:
                raise Unavailable(f"shim at {path} keeps refusing new containers")
        raise FailedPrecondition(f"every shim pool of namespace {flags.namespace} is full")
    finally:
        os.close(lock)


def _daemon_argv(flags: Flags) -> list[str]:
    prog = sys.argv[0] if sys.argv and os.path.isabs(sys.argv[0]) else ""
    if prog and os.access(prog, os.X_OK) and not prog.endswith(".py"):
        argv = [prog]
    else:
        argv = [sys.executable, "-m", "kettle.shim.main"]
    argv += ["-namespace", flags.namespace, "-id", flags.id, "-address", flags.address]
    if flags.publish_binary:
        argv += ["-publish-binary", flags.publish_binary]
    if flags.debug:
        argv.append("-debug")
    return argv


def spawn_daemon(flags: Flags, listener: _socket.socket) -> int:
    """Start the serving process: new session, /dev/null stdio, the listener as fd 3.

    subprocess rather than os.posix_spawn: glibc's posix_spawn leaves its internal signals
    ignored in the child, and the shim's containers would inherit that."""
    import subprocess

    # Nothing else of ours is at fd 3 any more (the start lock is closed).
    if listener.fileno() != 3:
        os.dup2(listener.fileno(), 3)
    proc = subprocess.Popen(
        _daemon_argv(flags),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(3,),
        start_new_session=True,
    )
    # The daemon outlives us: keep subprocess from tracking (and warning about) it.
    proc.returncode = 0
    return proc.pid


def _adjust_daemon(pid: int, cfg: ShimConfig) -> None:
    """oom_score_adj one above ours (containerd's, inherited), and the ShimCgroup option."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            mine = int(f.read().strip())
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(min(mine + 1, 1000)))
    except (OSError, ValueError):
        pass  # the daemon may have exited already; it reports its own failures
    if cfg.shim_cgroup:
        _join_cgroup(pid, cfg.shim_cgroup)


def _join_cgroup(pid: int, cgroup: str) -> None:
    from kettle.cgroups.host import DEFAULT_ROOT, Host, detect_mode, v1_mounts

    rel = cgroup.lstrip("/")
    if detect_mode() == "v2":
        dirs = [os.path.join(DEFAULT_ROOT, rel)]
    else:
        dirs = sorted({os.path.join(m.mountpoint, rel) for m in v1_mounts(Host()).values()})
    for d in dirs:
        if not os.path.isdir(d):
            raise FailedPrecondition(f"ShimCgroup {cgroup}: {d} does not exist")
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def run(flags: Flags, stdin_data: bytes) -> str:
    """Do what `shim start` does; return the address to print."""
    from kettle.shim import config as cfgmod

    if not flags.id or not flags.namespace or not flags.address:
        raise FailedPrecondition("start needs -id, -namespace and -address")
    cfg = cfgmod.from_environment()
    cfgmod.apply_options(cfg, cfgmod.decode_stdin_options(stdin_data))
    bundle = os.getcwd()
    path, listener = place(flags, cfg, annotations_of(bundle))
    address = addr.to_address(path)
    if listener is None:
        addr.write_address_file(bundle, address)
        return address
    try:
        addr.write_address_file(bundle, address)
        pid = spawn_daemon(flags, listener)
    except BaseException:
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass  # never bound, or removed already
        raise
    listener.close()
    try:
        _adjust_daemon(pid, cfg)
    except KettleError:
        os.kill(pid, 9)
        raise
    return address
