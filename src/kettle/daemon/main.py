"""kettled: `kettled [--config FILE] [--root DIR] [--state DIR] [--address SOCK]`.

Runs in the foreground until SIGTERM or SIGINT.  Containers keep running in their shims when
kettled stops; the next kettled reconnects to them."""

from __future__ import annotations

import argparse
import fcntl
import grp
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field

from kettle.errors import FailedPrecondition, InvalidArgument, KettleError

DEFAULT_CONFIG = "/etc/kettle/kettled.toml"
DEFAULT_ROOT = "/var/lib/kettle"
DEFAULT_STATE = "/run/kettle"
DEFAULT_ADDRESS = "/run/kettle/kettle.sock"

log = logging.getLogger("kettled")


@dataclass
class Config:
    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    address: str = DEFAULT_ADDRESS
    #: the shim namespace (containerd's); several kettleds on one host need their own.
    namespace: str = "kettle"
    log_level: str = "info"
    plain_http: list[str] = field(default_factory=list)


_KEYS = {"root", "state", "address", "namespace", "log_level"}


def load_config(path: str, required: bool) -> Config:
    import tomllib

    cfg = Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise InvalidArgument(f"config {path}: not found") from None
        return cfg
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"config {path}: {e}") from None
    for key, value in data.items():
        if key in _KEYS and isinstance(value, str):
            setattr(cfg, key, value)
        elif key == "registry" and isinstance(value, dict):
            for rkey, rvalue in value.items():
                if rkey != "plain_http" or not isinstance(rvalue, list):
                    raise InvalidArgument(f"config {path}: unsupported key registry.{rkey}")
                cfg.plain_http = [str(v) for v in rvalue]
        else:
            raise InvalidArgument(f"config {path}: unsupported key {key}")
    return cfg


def parse(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(prog="kettled", description="Kettle's container daemon")
    p.add_argument("--config", default=None, help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--root", help="persistent data directory")
    p.add_argument("--state", help="runtime state directory")
    p.add_argument("--address", help="gRPC unix socket")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    a = p.parse_args(argv)
    cfg = load_config(a.config or DEFAULT_CONFIG, required=a.config is not None)
    for key in ("root", "state", "address", "log_level"):
        value = getattr(a, key)
        if value:
            setattr(cfg, key, value)
    for key in ("root", "state", "address"):
        setattr(cfg, key, os.path.abspath(getattr(cfg, key)))
    return cfg


def _kettle_gid() -> int | None:
    try:
        return grp.getgrnam("kettle").gr_gid
    except KeyError:
        return None


def run(cfg: Config) -> None:
    from kettle.daemon.containers import Containers
    from kettle.daemon.events import EventSink
    from kettle.daemon.server import Service, serve
    from kettle.image.service import ImageService, RegistryOptions

    for d in (cfg.root, cfg.state, os.path.dirname(cfg.address)):
        os.makedirs(d, mode=0o711, exist_ok=True)
    lock = os.open(os.path.join(cfg.state, "kettled.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FailedPrecondition(f"another kettled uses state {cfg.state}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    images = ImageService(
        os.path.join(cfg.root, "images"),
        registry=RegistryOptions(plain_http=tuple(cfg.plain_http)),
    )
    events = EventSink(os.path.join(cfg.state, "events.sock"))
    containers = Containers(cfg.root, cfg.state, cfg.namespace, images, events.address)
    containers.reconcile()
    server = serve(Service(images, containers, cfg.root, cfg.state), cfg.address, _kettle_gid())
    log.info("kettled listening on %s", cfg.address)
    while not stop.wait(3600):
        pass
    log.info("kettled stopping; containers keep running")
    server.stop(grace=2).wait()
    events.close()
    os.close(lock)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse(sys.argv[1:] if argv is None else argv)
    except KettleError as e:
        print(f"kettled: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        run(cfg)
    except KettleError as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
