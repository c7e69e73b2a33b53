"""The OCI runtime spec of a container, from the image's config and the client's flags.

Everything in the request is checked before anything is made; only then are missing bind
sources, named volumes and anonymous volumes created (:func:`build`'s last step), so that a
bad flag leaves nothing behind.  Defaults are Docker's: its capability set, a seccomp profile
with the effect of Docker's (kettle.daemon.seccomp_profile), masked and read-only /proc and
/sys paths, a 64 MiB /dev/shm.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass, field
from typing import Any

from kettle.errors import FailedPrecondition, InvalidArgument, NotFound
from kettle.runtime.rlimits import RLIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.api.kettle_pb import CreateContainerRequest, Resources
    from kettle.daemon.volumes import VolumeStore
    from kettle.image.config import ImageConfig

#: Docker's default capability set.
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Docker masks this too (power capping counters leak host activity); the runtime's default
#: spec has the rest of Docker's list.
_EXTRA_MASKED = ("/sys/devices/virtual/powercap",)
DEFAULT_SHM_SIZE = 64 << 20
#: Docker refuses less: the runtime itself and a shell do not fit below it.
MIN_MEMORY = 6 << 20
CPU_PERIOD_US = 100_000

#: tini, statically linked (Debian's `tini` package), run as pid 1 for --init.
INIT_BINARY = "/usr/bin/tini-static"
#: Where --init's binary appears: on the container's private /dev tmpfs, so neither the
#: image's filesystem nor a read-only root matters (Podman's choice for its catatonit).
INIT_PATH = "/dev/init"

#: host /dev entries that are not devices to hand over to --privileged (Docker's list).
_HOST_DEV_SKIP = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
# The kernel's resource limits, by Docker's --ulimit names (nofile for RLIMIT_NOFILE).
_RLIMIT_NAMES = frozenset(n.removeprefix("RLIMIT_").lower() for n in RLIMITS)
RLIM_INFINITY = (1 << 64) - 1
_PROPAGATION = frozenset(
    {"private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"}
)
#: Docker's SELinux relabel (z, Z) and macOS consistency options: no meaning on this host.
_NO_MEANING = frozenset({"z", "Z", "consistent", "cached", "delegated"})
_TMPFS_DEFAULTS = ("nosuid", "nodev", "noexec")
_TMPFS_FLAGS = frozenset(
    {
        "ro",
        "rw",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "diratime",
        "nodiratime",
        "sync",
        "async",
        "dirsync",
        "mand",
        "nomand",
        *_PROPAGATION,
    }
)
_TMPFS_DATA = frozenset({"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge", "mpol"})
_OPPOSITE = {"exec": "noexec", "suid": "nosuid", "dev": "nodev", "rw": "ro"}
_OPPOSITE.update({v: k for k, v in list(_OPPOSITE.items())})


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """KEY=VALUE lists, later keys replacing earlier ones (image env, then -e; exec's too)."""
    out: dict[str, str] = {}
    for item in (*base, *extra):
        if not item or item.startswith("="):
            raise InvalidArgument(f"env: invalid variable {item!r}")
        key, sep, value = item.partition("=")
        out[key] = f"{key}={value}" if sep else f"{key}="
    return list(out.values())


# --- capabilities ----------------------------------------------------------------------------


def cap_name(text: str, flag: str) -> str:
    """CAP_X for x, X, cap_x or CAP_X; ALL stays ALL."""
    from kettle.runtime.caps import CAPS

    name = text.strip().upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPS:
        raise InvalidArgument(f"{flag} {text}: unknown capability")
    return name


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        # Without /proc, every capability kettle knows; the runtime reports any the kernel lacks.
        return 63


def _own_bounding() -> int:
    """kettled's bounding set: a container cannot get a capability kettled lacks."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return (1 << 64) - 1  # unknown: let the runtime report what it cannot grant


def all_caps() -> list[str]:
    """Every capability the running kernel has and kettled may pass on (--privileged,
    --cap-add ALL); a host that takes one from root (here: CAP_SYS_RESOURCE) keeps it."""
    from kettle.runtime.caps import CAPS

    last, bounding = _last_cap(), _own_bounding()
    return [
        n for n, v in sorted(CAPS.items(), key=lambda kv: kv[1]) if v <= last and bounding >> v & 1
    ]


def capabilities(add: list[str], drop: list[str], privileged: bool) -> list[str]:
    """Docker's rules: ALL in --cap-add starts from every capability (less the dropped ones),
    ALL in --cap-drop from none (plus the added ones), else the default set less the dropped
    plus the added ones."""
    adds = [cap_name(c, "--cap-add") for c in add]
    drops = [cap_name(c, "--cap-drop") for c in drop]
    if privileged:
        return all_caps()
    if "ALL" in adds:
        return [c for c in all_caps() if c not in drops]
    if "ALL" in drops:
        base: list[str] = []
    else:
        base = [c for c in DEFAULT_CAPS if c not in drops]
    for c in adds:
        if c not in base:
            base.append(c)
    return base


# --- security options ------------------------------------------------------------------------


@dataclass
class Security:
    #: None: no filter (unconfined or privileged); "" : the default profile; else a profile's JSON
    seccomp: str | None = ""
    no_new_privileges: bool = False


def _truth(value: str, opt: str) -> bool:
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidArgument(f"--security-opt {opt}: expected true or false")


def security(opts: list[str]) -> Security:
    out = Security()
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep and ":" in opt:
            key, _, value = opt.partition(":")  # Docker's older no-new-privileges:true
        if key == "no-new-privileges":
            out.no_new_privileges = _truth(value, opt)
        elif key == "seccomp" and value:
            out.seccomp = None if value == "unconfined" else value
        elif (key, value) in (("apparmor", "unconfined"), ("label", "disable")):
            pass  # this host has neither AppArmor nor SELinux: nothing to lift
        elif key in ("apparmor", "label"):
            raise InvalidArgument(f"--security-opt {opt}: {key} is not supported on this host")
        else:
            raise InvalidArgument(f"--security-opt {opt}: unknown security option")
    return out


def _seccomp(sec: Security, caps: list[str], privileged: bool) -> dict[str, Any] | None:
    from kettle.daemon import seccomp_profile as sp
    from kettle.runtime import seccomp as rt_seccomp

    if privileged or sec.seccomp is None:
        return None
    if sec.seccomp == "":
        return sp.default_profile(caps)
    text = sec.seccomp
    where = "--security-opt seccomp"
    if not text.lstrip().startswith("{"):
        # An API client may name a file on kettled's host (kctl sends the file's content).
        if not text.startswith("/"):
            raise InvalidArgument(f"{where}={text}: not JSON and not an absolute path")
        try:
            with open(text) as f:
                text = f.read()
        except FileNotFoundError:
            raise InvalidArgument(f"{where}={sec.seccomp}: no such file") from None
        where = f"{where}={sec.seccomp}"
    profile = sp.from_docker(sp.parse(text, where), caps)
    try:
        rt_seccomp.validate(profile)
    except InvalidArgument as e:
        raise InvalidArgument(f"{where}: {e}") from None
    return profile


# --- resources -------------------------------------------------------------------------------


def parse_cpu_list(text: str, flag: str) -> set[int]:
    """0-2,4 -> {0, 1, 2, 4}."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise InvalidArgument(f"{flag} {text}: invalid CPU list") from None
        if first < 0 or last < first:
            raise InvalidArgument(f"{flag} {text}: invalid CPU range {part!r}")
        cpus.update(range(first, last + 1))
    return cpus


def online_cpus() -> set[int]:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            return parse_cpu_list(f.read().strip(), "online CPUs")
    except OSError:
        return set(range(os.cpu_count() or 1))


def swap_accounted() -> bool:
    """Whether the kernel limits memory+swap (v1: swapaccount; v2: memory.swap.max exists)."""
    from kettle.cgroups import detect_mode

    if detect_mode() == "v2":
        with os.scandir("/sys/fs/cgroup") as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    return os.path.exists(os.path.join(e.path, "memory.swap.max"))
        return False
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def resources(
    r: Resources, cpus: set[int] | None = None, swap: bool | None = None
) -> dict[str, Any]:
    """linux.resources entries (without devices) for the request's limits."""
    out: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    if r.memory < 0:
        raise InvalidArgument(f"--memory {r.memory}: must not be negative")
    if r.memory:
        if r.memory < MIN_MEMORY:
            raise InvalidArgument(f"--memory {r.memory}: the minimum is 6MiB ({MIN_MEMORY} bytes)")
        mem["limit"] = r.memory
    if r.memory_reservation:
        if r.memory_reservation < 0:
            raise InvalidArgument(f"--memory-reservation {r.memory_reservation}: negative")
        if r.memory and r.memory_reservation > r.memory:
            raise InvalidArgument(
                f"--memory-reservation {r.memory_reservation}: above --memory {r.memory}"
            )
        mem["reservation"] = r.memory_reservation
    if r.memory_swap:
        if not r.memory:
            raise InvalidArgument(f"--memory-swap {r.memory_swap}: needs --memory as well")
        if r.memory_swap != -1 and r.memory_swap < r.memory:
            raise InvalidArgument(
                f"--memory-swap {r.memory_swap}: must be at least --memory {r.memory} "
                "(it limits memory plus swap)"
            )
        if swap is None:
            swap = swap_accounted()
        if not swap and r.memory_swap != -1:
            raise InvalidArgument(
                f"--memory-swap {r.memory_swap}: this kernel does not account swap"
            )
        if swap:
            mem["swap"] = r.memory_swap
    elif r.memory:
        if swap is None:
            swap = swap_accounted()
        if swap:
            mem["swap"] = 2 * r.memory  # Docker: as much swap as memory
    if mem:
        out["memory"] = mem
    cpu: dict[str, Any] = {}
    if r.nano_cpus:
        if cpus is None:
            cpus = online_cpus()
        if r.nano_cpus < 0 or r.nano_cpus > len(cpus) * 10**9:
            raise InvalidArgument(
                f"--cpus {r.nano_cpus / 1e9:g}: the range is 0.01 to {len(cpus)} "
                f"(this host has {len(cpus)} CPUs)"
            )
        quota = r.nano_cpus * CPU_PERIOD_US // 10**9
        if quota < 1000:
            raise InvalidArgument(f"--cpus {r.nano_cpus / 1e9:g}: the minimum is 0.01")
        cpu["period"] = CPU_PERIOD_US
        cpu["quota"] = quota
    if r.cpu_shares:
        if r.cpu_shares < 0:
            raise InvalidArgument(f"--cpu-shares {r.cpu_shares}: must not be negative")
        # cgroup v1 takes 2..262144 (v2's weight is converted from it by the runtime)
        cpu["shares"] = min(max(r.cpu_shares, 2), 262144)
    if r.cpuset_cpus:
        if cpus is None:
            cpus = online_cpus()
        want = parse_cpu_list(r.cpuset_cpus, "--cpuset-cpus")
        missing = sorted(want - cpus)
        if missing:
            raise InvalidArgument(
                f"--cpuset-cpus {r.cpuset_cpus}: CPUs {','.join(map(str, missing))} are not "
                f"available (online: {','.join(map(str, sorted(cpus)))})"
            )
        cpu["cpus"] = r.cpuset_cpus
    if cpu:
        out["cpu"] = cpu
    if r.pids_limit:
        if r.pids_limit < -1:
            raise InvalidArgument(f"--pids-limit {r.pids_limit}: use -1 for no limit")
        out["pids"] = {"limit": r.pids_limit}
    return out


def rlimits(ulimits: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """process.rlimits from (name, soft, hard); -1 is unlimited."""
    out: dict[str, dict[str, Any]] = {}
    for name, soft, hard in ulimits:
        if name not in _RLIMIT_NAMES:
            raise InvalidArgument(f"--ulimit {name}: unknown limit")
        s = RLIM_INFINITY if soft == -1 else soft
        h = RLIM_INFINITY if hard == -1 else hard
        if s < 0 or h < 0:
            raise InvalidArgument(f"--ulimit {name}={soft}:{hard}: negative limit")
        if s > h:
            raise InvalidArgument(f"--ulimit {name}={soft}:{hard}: soft limit above the hard one")
        out[name] = {"type": f"RLIMIT_{name.upper()}", "soft": s, "hard": h}
    return list(out.values())


# --- devices ---------------------------------------------------------------------------------


def _device_entry(path: str, st: os.stat_result) -> dict[str, Any]:
    return {
        "path": path,
        "type": "b" if stat.S_ISBLK(st.st_mode) else "c",
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _is_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)


def _walk_devices(top: str, skip: frozenset[str] = frozenset()) -> list[tuple[str, os.stat_result]]:
    found: list[tuple[str, os.stat_result]] = []
    try:
        entries = list(os.scandir(top))
    except OSError:
        return found
    for e in entries:
        if e.name in skip:
            continue
        try:
            if e.is_symlink():
                continue
            if e.is_dir(follow_symlinks=False):
                found += _walk_devices(e.path)
                continue
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if _is_device(st):
            found.append((e.path, st))
    return found


def host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev (--privileged), as linux.devices entries."""
    return [
        _device_entry(path, st)
        for path, st in _walk_devices("/dev", _HOST_DEV_SKIP)
        if path != "/dev/console"  # the runtime gives the container a console of its own
    ]


def devices(items: list[tuple[str, str, str]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """linux.devices and resources.devices allow rules for --device host[:ctr[:perms]]."""
    nodes: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for host, ctr, perms in items:
        target = ctr or host
        perms = perms or "rwm"
        if not perms or set(perms) - set("rwm") or len(set(perms)) != len(perms):
            raise InvalidArgument(f"--device {host}: invalid permissions {perms!r} (r, w, m)")
        if not host.startswith("/") or not target.startswith("/"):
            raise InvalidArgument(f"--device {host}: paths must be absolute")
        try:
            st = os.stat(host)
        except FileNotFoundError:
            raise InvalidArgument(f"--device {host}: no such device") from None
        if stat.S_ISDIR(st.st_mode):
            found = [
                (posixpath.join(target, os.path.relpath(p, host)), s)
                for p, s in _walk_devices(host)
            ]
        elif _is_device(st):
            found = [(target, st)]
        else:
            raise InvalidArgument(f"--device {host}: not a device node")
        for path, s in found:
            entry = _device_entry(path, s)
            nodes.append(entry)
            rules.append(
                {
                    "allow": True,
                    "type": entry["type"],
                    "major": entry["major"],
                    "minor": entry["minor"],
                    "access": perms,
                }
            )
    return nodes, rules


# --- mounts ----------------------------------------------------------------------------------


@dataclass
class MountPlan:
    """A user mount, checked; `source` is made or found when the spec is realised."""

    kind: str  # bind, volume, anonymous, tmpfs
    source: str
    target: str
    options: list[str] = field(default_factory=list)
    #: an anonymous volume that goes with a --rm container
    remove_with_container: bool = False


def check_target(target: str, flag: str) -> str:
    if not target.startswith("/"):
        raise InvalidArgument(f"{flag}: container path {target!r} must be absolute")
    clean = posixpath.normpath(target)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise InvalidArgument(f"{flag}: cannot mount over the container's root '/'")
    return clean


def _bind_options(opts: list[str], readonly: bool, flag: str) -> list[str]:
    from kettle.daemon.volumes import REMOVE_WITH_CONTAINER

    propagation = "rprivate"
    rest: list[str] = []
    for o in opts:
        if o in _PROPAGATION:
            propagation = o
        elif o == "ro":
            readonly = True
        elif o == "rw":
            readonly = False
        elif o in _NO_MEANING or o in ("nocopy", REMOVE_WITH_CONTAINER, "bind", "rbind"):
            pass  # nocopy: kettled never copies image content into a volume (see report)
        elif o in ("nosuid", "nodev", "noexec", "suid", "dev", "exec"):
            rest.append(o)
        else:
            raise InvalidArgument(f"{flag}: unknown mount option {o!r}")
    return ["rbind", "ro" if readonly else "rw", *rest, propagation]


def _tmpfs_options(opts: list[str], readonly: bool, flag: str) -> list[str]:
    chosen: dict[str, None] = dict.fromkeys(_TMPFS_DEFAULTS)
    data: dict[str, str] = {}
    if readonly:
        opts = [*opts, "ro"]
    for o in opts:
        key, sep, value = o.partition("=")
        if sep:
            if key not in _TMPFS_DATA:
                raise InvalidArgument(f"{flag}: unknown tmpfs option {o!r}")
            data[key] = value
        elif o in _TMPFS_FLAGS:
            chosen.pop(_OPPOSITE.get(o, ""), None)
            chosen[o] = None
        else:
            raise InvalidArgument(f"{flag}: unknown tmpfs option {o!r}")
    return [*chosen, *(f"{k}={v}" for k, v in data.items())]


def plan_mounts(
    req: CreateContainerRequest, image_volumes: tuple[str, ...] = ()
) -> list[MountPlan]:
    from kettle.daemon.volumes import REMOVE_WITH_CONTAINER, check_name

    plans: list[MountPlan] = []
    seen: dict[str, str] = {}
    for m in req.mounts:
        flag = f"mount {m.source + ':' if m.source else ''}{m.target}"
        target = check_target(m.target, flag)
        if target in seen:
            raise InvalidArgument(f"{flag}: duplicate mount point {target}")
        seen[target] = flag
        opts = list(m.options)
        if m.type == "bind":
            if not m.source.startswith("/"):
                raise InvalidArgument(f"{flag}: host path {m.source!r} must be absolute")
            plans.append(
                MountPlan(
                    "bind",
                    posixpath.normpath(m.source),
                    target,
                    _bind_options(opts, m.readonly, flag),
                )
            )
        elif m.type == "volume":
            if m.source:
                check_name(m.source)
                plans.append(
                    MountPlan("volume", m.source, target, _bind_options(opts, m.readonly, flag))
                )
            else:
                plans.append(
                    MountPlan(
                        "anonymous",
                        "",
                        target,
                        _bind_options(opts, m.readonly, flag),
                        remove_with_container=req.auto_remove or REMOVE_WITH_CONTAINER in opts,
                    )
                )
        elif m.type == "tmpfs":
            if m.source:
                raise InvalidArgument(f"{flag}: a tmpfs mount takes no source")
            plans.append(MountPlan("tmpfs", "", target, _tmpfs_options(opts, m.readonly, flag)))
        else:
            raise InvalidArgument(f"{flag}: unknown mount type {m.type!r} (bind, volume, tmpfs)")
    # The image's VOLUMEs that no flag covers get an anonymous volume each, as with Docker.
    for v in image_volumes:
        target = check_target(v, f"image volume {v}")
        if target not in seen:
            seen[target] = v
            plans.append(
                MountPlan(
                    "anonymous",
                    "",
                    target,
                    ["rbind", "rw", "rprivate"],
                    remove_with_container=req.auto_remove,
                )
            )
    return plans


def _realise(
    plans: list[MountPlan], volumes: VolumeStore | None, container_id: str
) -> list[dict[str, Any]]:
    """The spec's mounts for the plans, making bind sources and volumes as needed."""
    for p in plans:
        if p.kind in ("volume", "anonymous") and volumes is None:
            raise FailedPrecondition(f"mount {p.target}: this kettled has no volume store")
    out: list[dict[str, Any]] = []
    made: list[str] = []
    try:
        for p in plans:
            if p.kind == "bind":
                if not os.path.exists(p.source):
                    # Docker's -v makes a missing host path as a directory.
                    os.makedirs(p.source, mode=0o755, exist_ok=True)
                source = p.source
            elif p.kind == "volume":
                assert volumes is not None
                vol, _new = volumes.create(p.source)
                source = vol.mountpoint
            elif p.kind == "anonymous":
                assert volumes is not None
                vol = volumes.create_anonymous(container_id, p.remove_with_container)
                made.append(vol.name)
                source = vol.mountpoint
            else:
                out.append(
                    {
                        "destination": p.target,
                        "type": "tmpfs",
                        "source": "tmpfs",
                        "options": p.options,
                    }
                )
                continue
            out.append(
                {"destination": p.target, "type": "bind", "source": source, "options": p.options}
            )
    except BaseException:
        for name in made:
            assert volumes is not None
            try:
                volumes.remove(name)
            except (OSError, NotFound):
                pass  # best effort: the create fails with the first error anyway
        raise
    return out


def _depth(m: dict[str, Any]) -> int:
    return len([p for p in str(m["destination"]).split("/") if p])


# --- the spec --------------------------------------------------------------------------------


def build(
    namespace: str,
    container_id: str,
    hostname: str,
    image: ImageConfig,
    req: CreateContainerRequest,
    user: dict[str, object],
    volumes: VolumeStore | None = None,
) -> dict[str, Any]:
    """`user` is process.user, resolved by kettle.daemon.users; `volumes` holds the named
    and anonymous volumes (made here for -v NAME:/path and -v /path)."""
    from kettle.runtime.defaults import default_spec

    spec = default_spec()
    entrypoint = list(req.entrypoint) if req.entrypoint_set else list(image.entrypoint or ())
    cmd = list(req.args) if req.args else ([] if req.entrypoint_set else list(image.cmd or ()))
    args = entrypoint + cmd
    if not args:
        raise InvalidArgument(f"image {req.image}: no command given and the image names none")
    proc = spec["process"]
    proc["terminal"] = bool(req.tty)
    proc["args"] = args
    env = list(image.env) or [_DEFAULT_PATH]
    proc["env"] = merge_env([*env, f"HOSTNAME={hostname}"], list(req.env))
    cwd = req.workdir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"workdir {cwd!r}: must be an absolute path")
    proc["cwd"] = cwd
    proc["user"] = user
    privileged = req.privileged
    caps = capabilities(list(req.cap_add), list(req.cap_drop), privileged)
    proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
    sec = security(list(req.security_opt))
    proc["noNewPrivileges"] = sec.no_new_privileges
    if req.ulimits:
        given = rlimits([(u.name, u.soft, u.hard) for u in req.ulimits])
        types = {r["type"] for r in given}
        proc["rlimits"] = [r for r in proc.get("rlimits", []) if r["type"] not in types] + given
    spec["root"] = {"path": "rootfs", "readonly": bool(req.read_only)}
    spec["hostname"] = hostname
    network = req.network or "none"
    linux = spec["linux"]
    if network == "host":
        linux["namespaces"] = [
            n for n in linux["namespaces"] if n["type"] not in ("network", "uts")
        ]
        spec.pop("hostname")
    elif network != "none":
        raise InvalidArgument(f"network {network!r}: only none and host are supported")
    # One cgroup parent per kettled namespace, as Docker uses /docker/<id>.
    linux["cgroupsPath"] = f"/{namespace}/{container_id}"

    res = linux.setdefault("resources", {})
    if req.resources is not None:
        res.update(resources(req.resources))
    nodes, rules = devices([(d.host_path, d.container_path, d.permissions) for d in req.devices])
    if privileged:
        by_path = {d["path"]: d for d in host_devices()}
        by_path.update({d["path"]: d for d in nodes})
        nodes = list(by_path.values())
        res["devices"] = [{"allow": True, "access": "rwm"}]
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
    else:
        res["devices"] = list(res.get("devices", [])) + rules
        linux["maskedPaths"] = list(linux.get("maskedPaths", [])) + [
            p for p in _EXTRA_MASKED if p not in linux.get("maskedPaths", [])
        ]
    if nodes:
        linux["devices"] = nodes
    profile = _seccomp(sec, caps, privileged)
    if profile is not None:
        linux["seccomp"] = profile

    if req.shm_size < 0:
        raise InvalidArgument(f"--shm-size {req.shm_size}: must not be negative")
    shm = req.shm_size or DEFAULT_SHM_SIZE
    mounts: list[dict[str, Any]] = spec["mounts"]
    for m in mounts:
        if m["destination"] == "/dev/shm":
            m["options"] = [o for o in m["options"] if not o.startswith("size=")] + [f"size={shm}"]
        if privileged and m["destination"] in ("/sys", "/sys/fs/cgroup"):
            m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]
    if req.init:
        if not os.access(INIT_BINARY, os.X_OK):
            raise FailedPrecondition(
                f"--init: {INIT_BINARY} is not installed (Debian: apt-get install tini)"
            )
        mounts.append(
            {
                "destination": INIT_PATH,
                "type": "bind",
                "source": INIT_BINARY,
                "options": ["bind", "ro", "nosuid", "nodev"],
            }
        )
        proc["args"] = [INIT_PATH, "--", *args]
    spec["annotations"] = dict(req.labels)

    # Last: everything above is checked; now bind sources and volumes are made.
    plans = plan_mounts(req, tuple(image.volumes or ()))
    targets = {p.target for p in plans}
    user_mounts = sorted(_realise(plans, volumes, container_id), key=_depth)
    spec["mounts"] = [m for m in mounts if m["destination"] not in targets] + user_mounts
    return spec


def volume_store(kettled_root: str) -> VolumeStore:
    """The volume store `build` makes volumes in (one per kettled root, made on first use)."""
    from kettle.daemon.volumes import for_root

    return for_root(kettled_root)
