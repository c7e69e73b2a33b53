"""kettled: `kettled [--config FILE] [--root DIR] [--state DIR] [--address SOCK]`.

Runs in the foreground until SIGTERM or SIGINT.  Containers keep running in their shims when
kettled stops; the next kettled reconnects to them."""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import grp
import logging
import os
import signal
import sys
import threading

from kettle.daemon.config import DEFAULT_CONFIG, Config, load
from kettle.errors import FailedPrecondition, KettleError

log = logging.getLogger("kettled")


def parse(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(prog="kettled", description="Kettle's container daemon")
    p.add_argument("--config", default=None, help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--root", help="persistent data directory")
    p.add_argument("--state", help="runtime state directory")
    p.add_argument("--address", help="gRPC unix socket")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    a = p.parse_args(argv)
    cfg = load(a.config or DEFAULT_CONFIG, required=a.config is not None)
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
    from kettle.api import TTRPC_SUFFIX
    from kettle.daemon.bus import EventBus
    from kettle.daemon.containers import Containers
    from kettle.daemon.context import Daemon
    from kettle.daemon.events import EventSink
    from kettle.daemon.server import serve, serve_ttrpc
    from kettle.daemon.services import make_parts
    from kettle.image.credentials import CredentialStore
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
    options = RegistryOptions(plain_http=tuple(cfg.plain_http))
    if cfg.certs_dirs:
        options = dataclasses.replace(options, certs_dirs=tuple(cfg.certs_dirs))
    if cfg.mirrors:
        mirrors = tuple((host, tuple(eps)) for host, eps in cfg.mirrors.items())
        options = dataclasses.replace(options, mirrors=mirrors)
    images = ImageService(
        os.path.join(cfg.root, "images"),
        registry=options,
        # kettled's logins live under its root, apart from Docker's config.json.
        credentials=CredentialStore(os.path.join(cfg.root, "auth.json"), use_docker=False),
    )
    bus = EventBus()
    events = EventSink(os.path.join(cfg.state, "events.sock"), bus)
    containers = Containers(cfg, images, events.address, bus)
    events.on_oom = containers.mark_oom
    daemon = Daemon(cfg, images, containers, bus)
    containers.reconcile()
    tcp = None
    if cfg.tcp_address:
        tcp = (cfg.tcp_address, cfg.tls_cert, cfg.tls_key, cfg.tls_ca)
    parts = make_parts(daemon)
    server = serve(parts, cfg.address, _kettle_gid(), tcp)
    fast = serve_ttrpc(parts, cfg.address + TTRPC_SUFFIX, _kettle_gid())
    log.info("kettled listening on %s", cfg.address)
    while not stop.wait(3600):
        pass
    log.info("kettled stopping; containers keep running")
    fast.shutdown(grace=2)
    server.stop(grace=2).wait()
    containers.close()
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
