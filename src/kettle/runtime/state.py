"""Container state: the status state machine and its on-disk record under --root.

Layout: ``<root>/<id>/state.json`` (the record, replaced atomically), ``<root>/<id>/lock``
(flock serialising operations on one container) and ``<root>/<id>/exec.sock`` (the socket the
blocked init waits on until ``start``).  The record is only a claim about the past: the live
status is derived from the kernel (is the init pid still the process we started? is its
cgroup frozen?), so a container whose init died is ``stopped`` without anyone reaping it.
"""

from __future__ import annotations

import fcntl
import os

from kettle.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kettle.runtime import jsonio as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

STATE_FILE = "state.json"
EXEC_SOCK = "exec.sock"


def exec_sock_path(dir_fd: int) -> str:
    """exec.sock named through an fd of the state directory.

    Short whatever --root is (sun_path holds 108 bytes) and with no chdir, which would not
    be safe in a multi-threaded caller such as the shim.
    """
    return f"/proc/self/fd/{dir_fd}/{EXEC_SOCK}"


# runc accepts ids of word characters, "+", "-" and "."; anything else (path separators,
# "..") is refused.  Checked without `re`, which costs ~7 ms to import on every runtime start.
_ID_EXTRA = frozenset("+-._")


class Status:
    """The container lifecycle's states: a closed set of singletons, used like an Enum.

    Not enum.Enum: importing enum (with functools and collections) costs ~4 ms on every
    kettle-runtime start, and this is all of it the runtime needs.  ``Status("running")`` looks
    a member up by value and raises ValueError for anything else.
    """

    __slots__ = ("value",)
    value: str

    CREATING: ClassVar[Status]
    CREATED: ClassVar[Status]
    RUNNING: ClassVar[Status]
    PAUSED: ClassVar[Status]
    STOPPED: ClassVar[Status]
    _members: ClassVar[dict[str, Status]] = {}

    def __new__(cls, value: str) -> Status:
        try:
            return cls._members[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a valid container status") from None

    @classmethod
    def _define(cls, value: str) -> Status:
        member = object.__new__(cls)
        member.value = value
        cls._members[value] = member
        return member

    def __repr__(self) -> str:
        return f"Status.{self.value.upper()}"

    def __reduce__(self) -> tuple[type[Status], tuple[str]]:
        return (Status, (self.value,))


Status.CREATING = Status._define("creating")
Status.CREATED = Status._define("created")
Status.RUNNING = Status._define("running")
Status.PAUSED = Status._define("paused")
Status.STOPPED = Status._define("stopped")


# The operations each status allows; anything else is a FailedPrecondition.
_ALLOWED: dict[str, frozenset[Status]] = {
    "start": frozenset({Status.CREATED}),
    "kill": frozenset({Status.CREATED, Status.RUNNING, Status.PAUSED}),
    "pause": frozenset({Status.RUNNING}),
    "resume": frozenset({Status.PAUSED}),
    "exec": frozenset({Status.CREATED, Status.RUNNING}),
    "update": frozenset({Status.CREATED, Status.RUNNING, Status.PAUSED}),
    "delete": frozenset({Status.STOPPED, Status.CREATED}),
    "ps": frozenset({Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED}),
}


def check_transition(container_id: str, op: str, status: Status) -> None:
    """Raise FailedPrecondition, worded as runc does, when op is not allowed in status."""
    if status in _ALLOWED[op]:
        return
    if op == "start":
        if status is Status.STOPPED:
            raise FailedPrecondition(f"cannot start a container that has stopped: {container_id}")
        raise FailedPrecondition(f"cannot start an already running container: {container_id}")
    if op == "delete":
        raise FailedPrecondition(
            f"cannot delete container {container_id} that is not stopped: {status.value}"
        )
    if op == "resume":
        raise FailedPrecondition(f"container not paused: {container_id}")
    if op == "pause" and status is Status.PAUSED:
        raise FailedPrecondition(f"container already paused: {container_id}")
    raise FailedPrecondition(f"container not running: {container_id}")


def validate_id(container_id: str) -> None:
    if not container_id:
        raise InvalidArgument("container id cannot be empty")
    ok = all(c.isalnum() or c in _ID_EXTRA for c in container_id)
    if not ok or not container_id.isprintable() or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id format: {container_id}")


_FIELDS = (
    "id",
    "bundle",
    "rootfs",
    "pid",
    "pid_start",
    "status",
    "created",
    "owner",
    "annotations",
    "cgroup",
    "systemd_cgroup",
    "rootless",
    "config",
)


class ContainerState:
    """The record of one container (a plain class: dataclasses cost ~15 ms to import)."""

    def __init__(
        self,
        id: str,
        bundle: str,
        rootfs: str,
        pid: int = 0,
        pid_start: int = 0,
        status: str = Status.CREATING.value,
        created: str = "",
        owner: str = "",
        annotations: dict[str, str] | None = None,
        cgroup: dict[str, Any] | None = None,
        systemd_cgroup: bool = False,
        rootless: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.bundle = bundle
        self.rootfs = rootfs
        self.pid = pid
        #: field 22 of /proc/<pid>/stat when the init was started: guards against pid reuse.
        self.pid_start = pid_start
        self.status = status
        self.created = created
        self.owner = owner
        self.annotations: dict[str, str] = annotations or {}
        self.cgroup: dict[str, Any] = cgroup or {}
        self.systemd_cgroup = systemd_cgroup
        self.rootless = rootless
        #: the bundle's config.json, for later commands (hooks, seccomp, process defaults).
        self.config: dict[str, Any] = config or {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContainerState) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerState:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def oci_state(self, status: Status) -> dict[str, Any]:
        """The runtime-spec state object (what hooks get on stdin)."""
        out: dict[str, Any] = {
            "ociVersion": self.config.get("ociVersion", "1.0.2"),
            "id": self.id,
            "status": status.value,
            "pid": self.pid if status is not Status.STOPPED else 0,
            "bundle": self.bundle,
        }
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def proc_start_time(pid: int) -> int | None:
    """Start time of pid (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def is_alive(pid: int, start: int) -> bool:
    if pid <= 0:
        return False
    now = proc_start_time(pid)
    return now is not None and (start == 0 or now == start)


class Store:
    """The directory of container records under the runtime's --root."""

    def __init__(self, root: str) -> None:
        self.root = root

    def dir(self, container_id: str) -> str:
        validate_id(container_id)
        return os.path.join(self.root, container_id)

    def create_dir(self, container_id: str) -> str:
        path = self.dir(container_id)
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise AlreadyExists(f"container with id exists: {container_id}") from None
        return path

    def load(self, container_id: str) -> ContainerState:
        path = os.path.join(self.dir(container_id), STATE_FILE)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"container {container_id} does not exist") from None
        except ValueError as e:
            raise FailedPrecondition(f"corrupt state file {path}: {e}") from None
        return ContainerState.from_json(data)

    def save(self, st: ContainerState) -> None:
        d = self.dir(st.id)
        tmp = os.path.join(d, f".{STATE_FILE}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(st.to_json()))  # dumps uses the C encoder; dump does not
        os.replace(tmp, os.path.join(d, STATE_FILE))

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.exists(os.path.join(self.root, n, STATE_FILE))]

    def remove(self, container_id: str) -> None:
        d = self.dir(container_id)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return
        for name in names:
            os.unlink(os.path.join(d, name))
        os.rmdir(d)

    def locked(self, container_id: str) -> _Lock:
        """An exclusive flock on the container's lock file, for a with-block."""
        return _Lock(os.path.join(self.dir(container_id), "lock"), container_id)


class _Lock:
    # A class rather than contextlib.contextmanager: contextlib costs ~1 ms a start.
    def __init__(self, path: str, container_id: str) -> None:
        self.path = path
        self.container_id = container_id
        self.fd = -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFound(f"container {self.container_id} does not exist") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def current_status(st: ContainerState, frozen: bool | None = None) -> Status:
    """The live status: the record corrected by what the kernel says now."""
    recorded = Status(st.status)
    if recorded is Status.STOPPED or not is_alive(st.pid, st.pid_start):
        if recorded is Status.CREATING and st.pid == 0:
            return Status.CREATING
        return Status.STOPPED
    if recorded in (Status.CREATED, Status.CREATING):
        return recorded
    if frozen:
        return Status.PAUSED
    return Status.RUNNING
