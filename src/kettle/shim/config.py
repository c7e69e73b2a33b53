"""Runtime options: what containerd passes (on `start`'s stdin and in Create) and the shim's
own settings.

Sources, later ones winning: built-in defaults, ``KETTLE_SHIM_*`` environment variables
(containerd's environment reaches every shim), then the options Any:

- ``containerd.runc.v1.Options`` (BinaryName, Root, SystemdCgroup, NoPivotRoot, NoNewKeyring,
  ShimCgroup, IoUid, IoGid), as containerd's runc runtime configuration sends them;
- ``runtimeoptions.v1.Options{config_path}`` (what CRI sends for a non-runc runtime type with a
  ``ConfigPath`` option, and ``ctr run --runtime-config-path``): a TOML file with the same keys
  plus the shim's own (Grouping, PoolSize, LingerSeconds).
"""

from __future__ import annotations

import os

from kettle.errors import InvalidArgument, Unimplemented

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kettle.proto.any_pb import Any as AnyMsg

RUNC_OPTIONS = "containerd.runc.v1.Options"
RUNTIME_OPTIONS = "runtimeoptions.v1.Options"

GROUPINGS = ("pool", "container")

DEFAULT_POOL_SIZE = 64
DEFAULT_LIBRARY_ROOT = "/run/containerd/kettle"
RUNC_ROOT_BASE = "/run/containerd"


class ShimConfig:
    """Settings for one container (and, for `start`, how to place it in a shim)."""

    __slots__ = (
        "binary_name",
        "grouping",
        "io_gid",
        "io_uid",
        "linger",
        "no_new_keyring",
        "no_pivot_root",
        "pool_size",
        "root",
        "shim_cgroup",
        "systemd_cgroup",
    )

    def __init__(self) -> None:
        #: "" = create containers with the in-process Kettle library; else a runc-compatible
        #: binary (name looked up on PATH, or a path)
        self.binary_name = ""
        #: base of the runtime's state root; the namespace is appended
        self.root = ""
        self.systemd_cgroup = False
        self.no_pivot_root = False
        self.no_new_keyring = False
        self.shim_cgroup = ""
        self.io_uid = 0
        self.io_gid = 0
        #: "pool": containers outside a pod share one shim per namespace (up to pool_size);
        #: "container": one shim per container.  Pods always get one shim per pod.
        self.grouping = "pool"
        self.pool_size = DEFAULT_POOL_SIZE
        #: seconds an empty shim waits for a new container before it exits
        self.linger = 0.0

    def runtime_root(self, namespace: str) -> str:
        """The --root for this container's runtime: `<base>/<namespace>` like the runc shim."""
        base = self.root
        if not base:
            if self.binary_name:
                base = os.path.join(RUNC_ROOT_BASE, os.path.basename(self.binary_name))
            else:
                base = DEFAULT_LIBRARY_ROOT
        return os.path.join(base, namespace)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


#: the bundle file `shim delete` reads to find the runtime a container was made with
SETTINGS_FILE = "kettle-shim.conf"


def write_settings(bundle: str, cfg: ShimConfig, namespace: str) -> None:
    """Record cfg in the bundle as `key=value` lines (`shim delete` reads them without
    importing json, whose import alone costs more than the rest of that process)."""
    lines = [f"namespace={namespace}"]
    for name in ShimConfig.__slots__:
        value = getattr(cfg, name)
        text = str(int(value)) if isinstance(value, bool) else str(value)
        if "\n" in text:
            raise InvalidArgument(f"runtime option {name}: must not contain a newline")
        lines.append(f"{name}={text}")
    tmp = os.path.join(bundle, f".{SETTINGS_FILE}")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(bundle, SETTINGS_FILE))


def read_settings(bundle: str) -> tuple[ShimConfig, str] | None:
    """(config, namespace) recorded by write_settings, or None when there is no record."""
    try:
        with open(os.path.join(bundle, SETTINGS_FILE)) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    cfg = ShimConfig()
    namespace = ""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "namespace":
            namespace = value
        elif key in ShimConfig.__slots__:
            default = getattr(cfg, key)
            try:
                if isinstance(default, bool):
                    setattr(cfg, key, value == "1")
                elif isinstance(default, int):
                    setattr(cfg, key, int(value))
                elif isinstance(default, float):
                    setattr(cfg, key, float(value))
                else:
                    setattr(cfg, key, value)
            except ValueError:
                raise InvalidArgument(f"{bundle}/{SETTINGS_FILE}: bad {key}={value!r}") from None
    return cfg, namespace


def _positive_int(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{where}: {value!r} is not an integer") from None
    if number < 1:
        raise InvalidArgument(f"{where}: must be at least 1, got {number}")
    return number


def _seconds(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{where}: {value!r} is not a number of seconds") from None
    if number < 0:
        raise InvalidArgument(f"{where}: must not be negative, got {number:g}")
    return number


def _grouping(value: Any, where: str) -> str:
    if value not in GROUPINGS:
        raise InvalidArgument(f"{where}: {value!r} is not one of {', '.join(GROUPINGS)}")
    return str(value)


def from_environment(environ: dict[str, str] | None = None) -> ShimConfig:
    env = os.environ if environ is None else environ
    cfg = ShimConfig()
    if env.get("KETTLE_SHIM_GROUPING"):
        cfg.grouping = _grouping(env["KETTLE_SHIM_GROUPING"], "KETTLE_SHIM_GROUPING")
    if env.get("KETTLE_SHIM_POOL_SIZE"):
        cfg.pool_size = _positive_int(env["KETTLE_SHIM_POOL_SIZE"], "KETTLE_SHIM_POOL_SIZE")
    if env.get("KETTLE_SHIM_LINGER"):
        cfg.linger = _seconds(env["KETTLE_SHIM_LINGER"], "KETTLE_SHIM_LINGER")
    if env.get("KETTLE_SHIM_BINARY"):
        cfg.binary_name = env["KETTLE_SHIM_BINARY"]
    return cfg


# TOML key -> (attribute, converter)
_TOML_KEYS = {
    "BinaryName": "binary_name",
    "Root": "root",
    "SystemdCgroup": "systemd_cgroup",
    "NoPivotRoot": "no_pivot_root",
    "NoNewKeyring": "no_new_keyring",
    "ShimCgroup": "shim_cgroup",
    "IoUid": "io_uid",
    "IoGid": "io_gid",
    "Grouping": "grouping",
    "PoolSize": "pool_size",
    "LingerSeconds": "linger",
}


def apply_toml(cfg: ShimConfig, path: str) -> None:
    """Merge a TOML config file (keys as in containerd's runc options, plus the shim's own)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InvalidArgument(f"runtime config {path}: {(e.strerror or str(e)).lower()}") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"runtime config {path}: {e}") from None
    for key, value in data.items():
        attr = _TOML_KEYS.get(key)
        where = f"runtime config {path}: {key}"
        if attr is None:
            raise InvalidArgument(f"{where}: unknown option (known: {', '.join(_TOML_KEYS)})")
        if attr in ("binary_name", "root", "shim_cgroup"):
            if not isinstance(value, str):
                raise InvalidArgument(f"{where}: must be a string")
            setattr(cfg, attr, value)
        elif attr in ("systemd_cgroup", "no_pivot_root", "no_new_keyring"):
            if not isinstance(value, bool):
                raise InvalidArgument(f"{where}: must be true or false")
            setattr(cfg, attr, value)
        elif attr in ("io_uid", "io_gid"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"{where}: must be a non-negative integer")
            setattr(cfg, attr, value)
        elif attr == "grouping":
            cfg.grouping = _grouping(value, where)
        elif attr == "pool_size":
            cfg.pool_size = _positive_int(value, where)
        else:
            cfg.linger = _seconds(value, where)


def apply_options(cfg: ShimConfig, options: AnyMsg | None) -> None:
    """Merge containerd's options Any (runc options or runtimeoptions with a config path)."""
    if options is None or not options.type_url:
        return
    from kettle.proto.wkt import any_name

    name = any_name(options)
    if name == RUNC_OPTIONS:
        from kettle.proto import runc_options_pb

        opts = runc_options_pb.Options.decode(options.value)
        if opts.task_api_address:
            raise Unimplemented(
                "runc options task_api_address: the kettle shim serves its own task api"
            )
        # criu_* only matter for Checkpoint, which this shim answers UNIMPLEMENTED.
        if opts.binary_name:
            cfg.binary_name = opts.binary_name
        if opts.root:
            cfg.root = opts.root
        cfg.systemd_cgroup = cfg.systemd_cgroup or opts.systemd_cgroup
        cfg.no_pivot_root = cfg.no_pivot_root or opts.no_pivot_root
        cfg.no_new_keyring = cfg.no_new_keyring or opts.no_new_keyring
        if opts.shim_cgroup:
            cfg.shim_cgroup = opts.shim_cgroup
        if opts.io_uid:
            cfg.io_uid = opts.io_uid
        if opts.io_gid:
            cfg.io_gid = opts.io_gid
    elif name == RUNTIME_OPTIONS:
        from kettle.proto import runtimeoptions_pb

        ropts = runtimeoptions_pb.Options.decode(options.value)
        if ropts.config_path:
            apply_toml(cfg, ropts.config_path)
    else:
        raise InvalidArgument(
            f"runtime options: unsupported type {options.type_url!r} "
            f"(expected {RUNC_OPTIONS} or {RUNTIME_OPTIONS})"
        )


def decode_stdin_options(data: bytes) -> AnyMsg | None:
    """`shim start` gets the options as a marshalled Any on stdin (nothing: no options)."""
    if not data:
        return None
    from kettle.proto.any_pb import Any as AnyMsg

    return AnyMsg.decode(data)
