"""The OCI runtime spec of a container, from the image's config and the client's flags."""

from __future__ import annotations

from typing import Any

from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.api.kettle_pb import CreateContainerRequest
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


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    out: dict[str, str] = {}
    for item in (*base, *extra):
        if not item or item.startswith("="):
            raise InvalidArgument(f"env: invalid variable {item!r}")
        key, sep, value = item.partition("=")
        out[key] = f"{key}={value}" if sep else f"{key}="
    return list(out.values())


def build(
    namespace: str,
    container_id: str,
    hostname: str,
    image: ImageConfig,
    req: CreateContainerRequest,
    user: dict[str, object],
) -> dict[str, Any]:
    """`user` is process.user, resolved by kettle.daemon.users."""
    from kettle.runtime.defaults import default_spec

    spec = default_spec()
    entrypoint = list(req.entrypoint) if req.entrypoint_set else list(image.entrypoint or ())
    cmd = list(req.args) if req.args else ([] if req.entrypoint_set else list(image.cmd or ()))
    args = entrypoint + cmd
    if not args:
        raise InvalidArgument(f"image {req.image}: no command given and the image names none")
    proc = spec["process"]
    proc["terminal"] = False
    proc["args"] = args
    env = list(image.env) or [_DEFAULT_PATH]
    proc["env"] = _merge_env([*env, f"HOSTNAME={hostname}"], list(req.env))
    cwd = req.workdir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"workdir {cwd!r}: must be an absolute path")
    proc["cwd"] = cwd
    proc["user"] = user
    caps = list(DEFAULT_CAPS)
    proc["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    proc["noNewPrivileges"] = False
    spec["root"] = {"path": "rootfs", "readonly": False}
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
    spec["annotations"] = dict(req.labels)
    return spec
