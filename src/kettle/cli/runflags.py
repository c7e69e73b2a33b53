"""The flags of `kctl run` and `kctl create`, and the CreateContainerRequest they make.

The parse_* helpers are pure (no daemon, no files unless named) and raise InvalidArgument with
the flag and value at fault, so that kctl answers `kctl: --memory 12q: ...` and creates
nothing.  kettled checks again what only it can (host paths, devices, capabilities, CPUs).
"""

from __future__ import annotations

import argparse
import os
import re

from kettle.api import kettle_pb as pb
from kettle.cli.common import env_from_host
from kettle.errors import InvalidArgument

#: kettled's marker for an anonymous volume of a --rm container (kettle.daemon.volumes
#: REMOVE_WITH_CONTAINER; repeated here so that kctl does not import the daemon's modules).
REMOVE_WITH_CONTAINER = "x-kettle-remove-with-container"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)(?:i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_MOUNT_MODES = frozenset(
    {
        "ro",
        "rw",
        "z",
        "Z",
        "nocopy",
        "consistent",
        "cached",
        "delegated",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
    }
)


# The kernel's resource limits, by Docker's --ulimit names (nofile for RLIMIT_NOFILE).
def ulimit_names() -> frozenset[str]:
    """--ulimit's names; asked only when the flag is given (the runtime's table imports
    ctypes and resource, ~2.5 ms of every `kctl run`)."""
    from kettle.runtime.rlimits import RLIMITS

    return frozenset(n.removeprefix("RLIMIT_").lower() for n in RLIMITS)


RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
HEALTH_ON_FAILURE = ("none", "restart", "kill")


# --- pure parsers ----------------------------------------------------------------------------


def parse_size(text: str, flag: str) -> int:
    """Docker's sizes: 512, 64m, 1.5g, 1GiB (binary units, b optional) -> bytes."""
    m = _SIZE.match(text.strip())
    if not m:
        raise InvalidArgument(f"{flag} {text}: invalid size (use a number with b, k, m or g)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_memory_swap(text: str, flag: str = "--memory-swap") -> int:
    """-1 is unlimited swap, else a size."""
    return -1 if text.strip() == "-1" else parse_size(text, flag)


def parse_cpus(text: str, flag: str = "--cpus") -> int:
    """--cpus 1.5 -> 1500000000 (billionths of a CPU)."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{flag} {text}: not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise InvalidArgument(f"{flag} {text}: must be more than 0")
    return round(value * 1e9)


def parse_duration_ms(text: str, flag: str) -> int:
    """Go's durations (1s, 500ms, 1m30s, 1.5h; 0) -> milliseconds."""
    s = text.strip()
    if s == "0":
        return 0
    pos, total = 0, 0.0
    if not s:
        raise InvalidArgument(f"{flag} {text!r}: empty duration")
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise InvalidArgument(f"{flag} {text}: invalid duration (use e.g. 30s, 500ms, 1m)")
        total += float(m.group(1)) * _DURATION_NS[m.group(2)]
        pos = m.end()
    ms = total / 1_000_000
    if 0 < ms < 1:
        raise InvalidArgument(f"{flag} {text}: must be at least 1ms")
    return int(ms)


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{flag} {text}: not an integer") from None


def parse_ulimit(text: str) -> pb.Ulimit:
    """name=soft[:hard]; -1 or unlimited for no limit; hard defaults to soft."""
    name, sep, values = text.partition("=")
    flag = "--ulimit"
    if not sep or not values:
        raise InvalidArgument(f"{flag} {text}: use name=soft[:hard]")
    if name not in ulimit_names():
        raise InvalidArgument(f"{flag} {text}: unknown limit {name!r}")
    soft_text, _, hard_text = values.partition(":")

    def value(v: str) -> int:
        if v == "unlimited":
            return -1
        n = _int(v, f"{flag} {text}:")
        if n < -1:
            raise InvalidArgument(f"{flag} {text}: negative limit")
        return n

    soft = value(soft_text)
    hard = value(hard_text) if hard_text else soft
    if hard != -1 and (soft == -1 or soft > hard):
        raise InvalidArgument(f"{flag} {text}: the soft limit is above the hard one")
    return pb.Ulimit(name=name, soft=soft, hard=hard)


def _abs_target(target: str, flag: str, text: str) -> str:
    if not target.startswith("/"):
        raise InvalidArgument(f"{flag} {text}: container path {target!r} must be absolute")
    if os.path.normpath(target) in ("/", "//"):
        raise InvalidArgument(f"{flag} {text}: cannot mount over the container's root '/'")
    return target


def _host_source(src: str, cwd: str) -> str | None:
    """An absolute host path for a bind source, or None when src names a volume."""
    if src.startswith("/"):
        return src
    if src in (".", "..") or src.startswith(("./", "../")):
        return os.path.normpath(os.path.join(cwd, src))  # as Docker's CLI since 23
    return None


def _modes(text: str, mode: str, flag: str) -> tuple[bool, list[str]]:
    readonly, opts = False, []
    for m in mode.split(","):
        if m not in _MOUNT_MODES:
            raise InvalidArgument(f"{flag} {text}: unknown option {m!r}")
        if m == "ro":
            readonly = True
        elif m == "rw":
            readonly = False
        else:
            opts.append(m)
    return readonly, opts


def parse_volume(text: str, cwd: str, remove_anonymous: bool = False) -> pb.Mount:
    """-v host:ctr[:opts], NAME:ctr[:opts], ctr[:opts] (an anonymous volume)."""
    flag = "-v"
    parts = text.split(":")
    if not text or len(parts) > 3 or not all(parts):
        raise InvalidArgument(f"{flag} {text}: use [HOST-PATH|NAME:]CONTAINER-PATH[:OPTIONS]")
    mode = ""
    if len(parts) == 1:
        src, dst = "", parts[0]
    elif len(parts) == 2 and all(m in _MOUNT_MODES for m in parts[1].split(",")):
        src, dst, mode = "", parts[0], parts[1]  # /ctr:ro, an anonymous volume
    elif len(parts) == 2:
        src, dst = parts
    else:
        src, dst, mode = parts
    target = _abs_target(dst, flag, text)
    readonly, opts = _modes(text, mode, flag) if mode else (False, [])
    if not src:
        if remove_anonymous:
            opts.append(REMOVE_WITH_CONTAINER)
        return pb.Mount(type="volume", target=target, readonly=readonly, options=opts)
    host = _host_source(src, cwd)
    if host is not None:
        if "nocopy" in opts:
            raise InvalidArgument(f"{flag} {text}: nocopy applies to volumes only")
        return pb.Mount(type="bind", source=host, target=target, readonly=readonly, options=opts)
    if not _VOLUME_NAME.match(src):
        raise InvalidArgument(
            f"{flag} {text}: {src!r} is neither an absolute host path nor a volume name "
            "(2+ letters, digits, _ . -)"
        )
    return pb.Mount(type="volume", source=src, target=target, readonly=readonly, options=opts)


def _bool_field(value: str, flag: str, text: str) -> bool:
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidArgument(f"{flag} {text}: expected true or false, not {value!r}")


def parse_mount(text: str, cwd: str, remove_anonymous: bool = False) -> pb.Mount:
    """--mount type=bind|volume|tmpfs,source=...,target=...[,readonly][,...] (Docker's keys)."""
    import csv

    flag = "--mount"
    fields = next(csv.reader([text]), [])
    kind, src, dst = "volume", "", ""
    readonly = False
    opts: list[str] = []
    for f in fields:
        key, sep, value = f.partition("=")
        key = key.strip().lower()
        if key == "type":
            kind = value
        elif key in ("source", "src"):
            src = value
        elif key in ("target", "destination", "dst"):
            dst = value
        elif key in ("readonly", "ro"):
            readonly = _bool_field(value, flag, text)
        elif key == "bind-propagation":
            if value not in _MOUNT_MODES or value in ("ro", "rw", "z", "Z", "nocopy"):
                raise InvalidArgument(f"{flag} {text}: unknown bind-propagation {value!r}")
            opts.append(value)
        elif key == "consistency":
            pass  # macOS file sharing only
        elif key == "volume-nocopy":
            if _bool_field(value, flag, text):
                opts.append("nocopy")
        elif key == "volume-driver":
            if value != "local":
                raise InvalidArgument(f"{flag} {text}: only the local volume driver exists")
        elif key == "tmpfs-size":
            opts.append(f"size={parse_size(value, f'{flag} {text}: tmpfs-size')}")
        elif key == "tmpfs-mode":
            try:
                mode = int(value, 8)
            except ValueError:
                raise InvalidArgument(f"{flag} {text}: tmpfs-mode {value!r} is not octal") from None
            opts.append(f"mode={mode:o}")
        elif not sep and not key:
            continue
        else:
            raise InvalidArgument(f"{flag} {text}: unknown field {key!r}")
    if kind not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f"{flag} {text}: type must be bind, volume or tmpfs")
    if not dst:
        raise InvalidArgument(f"{flag} {text}: target is required")
    target = _abs_target(dst, flag, text)
    if kind == "tmpfs":
        if src:
            raise InvalidArgument(f"{flag} {text}: a tmpfs mount takes no source")
        return pb.Mount(type="tmpfs", target=target, readonly=readonly, options=opts)
    if kind == "bind":
        host = _host_source(src, cwd) if src else None
        if host is None:
            raise InvalidArgument(f"{flag} {text}: a bind mount needs an absolute source path")
        # Unlike -v, --mount never makes the host path (Docker's rule); kctl and kettled
        # share the host, so checking here answers before anything is created.
        if not os.path.exists(host):
            raise InvalidArgument(f"{flag} {text}: bind source path does not exist: {host}")
        return pb.Mount(type="bind", source=host, target=target, readonly=readonly, options=opts)
    if src and not _VOLUME_NAME.match(src):
        raise InvalidArgument(f"{flag} {text}: invalid volume name {src!r}")
    if not src and remove_anonymous:
        opts.append(REMOVE_WITH_CONTAINER)
    return pb.Mount(type="volume", source=src, target=target, readonly=readonly, options=opts)


def parse_tmpfs(text: str) -> pb.Mount:
    """--tmpfs /path[:opt,opt...]"""
    dst, _, opts = text.partition(":")
    target = _abs_target(dst, "--tmpfs", text)
    return pb.Mount(type="tmpfs", target=target, options=[o for o in opts.split(",") if o])


def parse_device(text: str) -> pb.Device:
    """--device /dev/x[:/dev/y][:rwm]"""
    parts = text.split(":")
    flag = "--device"
    perms = ""
    if len(parts) == 1:
        host, ctr = parts[0], ""
    elif len(parts) == 2 and not parts[1].startswith("/"):
        host, ctr, perms = parts[0], "", parts[1]
    elif len(parts) == 2:
        host, ctr = parts
    elif len(parts) == 3:
        host, ctr, perms = parts
    else:
        raise InvalidArgument(f"{flag} {text}: use HOST-PATH[:CONTAINER-PATH][:PERMISSIONS]")
    if not host.startswith("/"):
        raise InvalidArgument(f"{flag} {text}: the host path must be absolute")
    if ctr and not ctr.startswith("/"):
        raise InvalidArgument(f"{flag} {text}: the container path must be absolute")
    if perms and (set(perms) - set("rwm") or len(set(perms)) != len(perms)):
        raise InvalidArgument(f"{flag} {text}: permissions are a combination of r, w and m")
    return pb.Device(host_path=host, container_path=ctr, permissions=perms)


def parse_restart(text: str) -> pb.RestartPolicy:
    """no | on-failure[:N] | always | unless-stopped"""
    name, sep, count = text.partition(":")
    if name not in RESTART_POLICIES:
        raise InvalidArgument(
            f"--restart {text}: unknown policy (use {', '.join(RESTART_POLICIES)})"
        )
    retries = 0
    if sep:
        if name != "on-failure":
            raise InvalidArgument(f"--restart {text}: only on-failure takes a retry count")
        retries = _int(count, f"--restart {text}:")
        if retries < 0:
            raise InvalidArgument(f"--restart {text}: the retry count must not be negative")
    return pb.RestartPolicy(name=name, max_retries=retries)


def _backoff(a: argparse.Namespace, restart: pb.RestartPolicy | None) -> pb.RestartPolicy | None:
    """The --restart-* back-off flags onto the policy (0 fields: kettled's defaults)."""
    given = {
        "initial_delay_ms": ("--restart-delay", a.restart_delay),
        "max_delay_ms": ("--restart-max-delay", a.restart_max_delay),
        "reset_after_ms": ("--restart-reset-after", a.restart_reset_after),
    }
    if all(v is None for _f, v in given.values()) and a.restart_multiplier is None:
        return restart
    if restart is None or restart.name == "no":
        raise InvalidArgument("--restart-*: a back-off needs a --restart policy")
    for attr, (flag, value) in given.items():
        if value is not None:
            setattr(restart, attr, max(1, parse_duration_ms(value, flag)))
    if a.restart_multiplier is not None:
        if a.restart_multiplier < 1:
            raise InvalidArgument(f"--restart-multiplier {a.restart_multiplier}: must be >= 1")
        restart.multiplier_milli = round(a.restart_multiplier * 1000)
    return restart


def parse_log_opts(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--log-opt {item}: use key=value")
        out[key] = value
    return out


def parse_signal(text: str, flag: str = "--stop-signal") -> str:
    import signal

    if text.isdigit():
        if not 0 < int(text) < 65:
            raise InvalidArgument(f"{flag} {text}: out of range")
        return text
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if not (name in signal.Signals.__members__ or re.match(r"^SIGRTM(IN|AX)([+-]\d+)?$", name)):
        raise InvalidArgument(f"{flag} {text}: unknown signal")
    return name


def security_opt(text: str, read: bool = True) -> str:
    """A --security-opt as kettled takes it: seccomp=PATH becomes seccomp=<the file's JSON>, as
    Docker's CLI sends it (kettled may run its containers with a profile kctl's user can read)."""
    import json

    key, sep, value = text.partition("=")
    if key == "seccomp" and sep and value != "unconfined" and read:
        if not value:
            raise InvalidArgument(f"--security-opt {text}: name a profile file or unconfined")
        try:
            with open(value) as f:
                content = f.read()
        except FileNotFoundError:
            raise InvalidArgument(f"--security-opt {text}: no such file") from None
        except OSError as e:
            raise InvalidArgument(f"--security-opt {text}: {e.strerror}") from None
        try:
            profile = json.loads(content)
        except ValueError as e:
            raise InvalidArgument(f"--security-opt {text}: invalid JSON ({e})") from None
        if not isinstance(profile, dict):
            raise InvalidArgument(f"--security-opt {text}: the profile must be a JSON object")
        return "seccomp=" + json.dumps(profile, separators=(",", ":"))
    if key == "seccomp" and not value:
        raise InvalidArgument(f"--security-opt {text}: name a profile file or unconfined")
    if key in ("no-new-privileges", "seccomp", "apparmor", "label"):
        return text
    if text.startswith("no-new-privileges:"):
        return text
    raise InvalidArgument(f"--security-opt {text}: unknown security option")


def parse_env_file(path: str) -> list[str]:
    """Docker's --env-file: NAME=VALUE lines; a bare NAME takes kctl's own value."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InvalidArgument(f"--env-file {path}: {e.strerror}") from None
    out = []
    for line in lines:
        item = line.lstrip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("="):
            raise InvalidArgument(f"--env-file {path}: invalid line {line!r}")
        out.append(item)
    return out


def health(a: argparse.Namespace) -> pb.HealthConfig | None:
    given = [
        a.health_cmd is not None,
        a.health_interval is not None,
        a.health_timeout is not None,
        a.health_retries is not None,
        a.health_start_period is not None,
        a.health_on_failure is not None,
    ]
    if a.no_healthcheck:
        if any(given):
            raise InvalidArgument("--no-healthcheck conflicts with the --health-* options")
        return pb.HealthConfig(test=["NONE"], disabled=True)
    if not any(given):
        return None
    msg = pb.HealthConfig()
    if a.health_cmd is not None:
        if not a.health_cmd.strip():
            raise InvalidArgument("--health-cmd: empty command")
        msg.test = ["CMD-SHELL", a.health_cmd]
    for attr, name in (
        ("interval_ms", "interval"),
        ("timeout_ms", "timeout"),
        ("start_period_ms", "start_period"),
    ):
        value = getattr(a, f"health_{name}")
        if value is not None:
            flag = f"--health-{name.replace('_', '-')}"
            ms = parse_duration_ms(value, flag)
            setattr(msg, attr, ms)
    if a.health_retries is not None:
        if a.health_retries < 0:
            raise InvalidArgument(f"--health-retries {a.health_retries}: must not be negative")
        msg.retries = a.health_retries
    if a.health_on_failure is not None:
        msg.on_failure = a.health_on_failure
    return msg


# --- argparse --------------------------------------------------------------------------------


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rm", action="store_true", help="remove the container once it exits")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[], metavar="FILE")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--hostname")
    p.add_argument("--entrypoint")
    p.add_argument("--network", default="none", choices=("none", "host"))
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    # storage
    p.add_argument("-v", "--volume", action="append", default=[], metavar="[SRC:]DST[:OPTS]")
    p.add_argument("--mount", action="append", default=[], metavar="type=...,target=...")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTS]")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    # resources
    p.add_argument("-m", "--memory", metavar="SIZE")
    p.add_argument("--memory-swap", metavar="SIZE", help="memory plus swap; -1: unlimited")
    p.add_argument("--memory-reservation", metavar="SIZE")
    p.add_argument("--cpus", metavar="N")
    p.add_argument("-c", "--cpu-shares", type=int, metavar="N")
    p.add_argument("--cpuset-cpus", metavar="LIST")
    p.add_argument("--pids-limit", type=int, metavar="N", help="-1: unlimited")
    p.add_argument("--shm-size", metavar="SIZE")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]")
    # security
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT")
    p.add_argument("--device", action="append", default=[], metavar="HOST[:CTR][:RWM]")
    # process
    p.add_argument("--init", action="store_true", help="run an init (tini) as pid 1")
    p.add_argument("--stop-signal", metavar="SIGNAL")
    p.add_argument("--stop-timeout", type=int, metavar="SECONDS")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--restart", metavar="POLICY", help="no, on-failure[:N], always, unless-stopped")
    p.add_argument("--restart-delay", metavar="DURATION", help="first back-off (default 1s)")
    p.add_argument("--restart-max-delay", metavar="DURATION", help="back-off cap (default 5m)")
    p.add_argument("--restart-multiplier", type=float, metavar="X", help="growth (default 2)")
    p.add_argument(
        "--restart-reset-after", metavar="DURATION", help="uptime that resets it (default 10m)"
    )
    # health
    p.add_argument("--health-cmd", metavar="CMD")
    p.add_argument("--health-interval", metavar="DURATION")
    p.add_argument("--health-timeout", metavar="DURATION")
    p.add_argument("--health-retries", type=int, metavar="N")
    p.add_argument("--health-start-period", metavar="DURATION")
    p.add_argument("--health-on-failure", choices=HEALTH_ON_FAILURE)
    p.add_argument("--no-healthcheck", action="store_true")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _labels(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def _resources(a: argparse.Namespace) -> pb.Resources:
    r = pb.Resources()
    if a.memory is not None:
        r.memory = parse_size(a.memory, "--memory")
    if a.memory_swap is not None:
        r.memory_swap = parse_memory_swap(a.memory_swap)
    if a.memory_reservation is not None:
        r.memory_reservation = parse_size(a.memory_reservation, "--memory-reservation")
    if a.cpus is not None:
        r.nano_cpus = parse_cpus(a.cpus)
    if a.cpu_shares is not None:
        if a.cpu_shares < 0:
            raise InvalidArgument(f"--cpu-shares {a.cpu_shares}: must not be negative")
        r.cpu_shares = a.cpu_shares
    if a.cpuset_cpus is not None:
        if not re.match(r"^\d+(-\d+)?(,\d+(-\d+)?)*$", a.cpuset_cpus):
            raise InvalidArgument(f"--cpuset-cpus {a.cpuset_cpus}: use a list such as 0-2,4")
        r.cpuset_cpus = a.cpuset_cpus
    if a.pids_limit is not None:
        # Docker: 0 and -1 both mean no limit; the request's 0 means "not set".
        r.pids_limit = -1 if a.pids_limit in (0, -1) else a.pids_limit
        if r.pids_limit < -1:
            raise InvalidArgument(f"--pids-limit {a.pids_limit}: use -1 for no limit")
    return r


def request(a: argparse.Namespace, auto_remove: bool) -> pb.CreateContainerRequest:
    cwd = os.getcwd()
    rm = bool(getattr(a, "rm", False))
    restart = parse_restart(a.restart) if a.restart else None
    restart = _backoff(a, restart)
    if restart is not None and restart.name != "no" and rm:
        raise InvalidArgument(f"--restart {a.restart}: conflicts with --rm")
    mounts = [parse_volume(v, cwd, rm) for v in a.volume]
    mounts += [parse_mount(m, cwd, rm) for m in a.mount]
    mounts += [parse_tmpfs(t) for t in a.tmpfs]
    env = [e for path in a.env_file for e in parse_env_file(path)] + list(a.env)
    return pb.CreateContainerRequest(
        image=a.image,
        args=a.command,
        entrypoint=[a.entrypoint] if a.entrypoint else [],
        entrypoint_set=a.entrypoint is not None,
        env=env_from_host(env),
        workdir=a.workdir or "",
        user=a.user or "",
        name=a.name or "",
        labels=_labels(a.label),
        hostname=a.hostname or "",
        network=a.network,
        auto_remove=auto_remove,
        tty=a.tty,
        open_stdin=a.interactive,
        mounts=mounts,
        read_only=a.read_only,
        resources=_resources(a),
        shm_size=parse_size(a.shm_size, "--shm-size") if a.shm_size is not None else 0,
        ulimits=[parse_ulimit(u) for u in a.ulimit],
        cap_add=list(a.cap_add),
        cap_drop=list(a.cap_drop),
        privileged=a.privileged,
        security_opt=[security_opt(s) for s in a.security_opt],
        devices=[parse_device(d) for d in a.device],
        init=a.init,
        log_opts=parse_log_opts(a.log_opt),
        restart=restart,
        health=health(a),
        stop_signal=parse_signal(a.stop_signal) if a.stop_signal else "",
        stop_timeout=-1 if a.stop_timeout is None else a.stop_timeout,
    )
