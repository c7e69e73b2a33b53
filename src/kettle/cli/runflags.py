"""The flags of `kctl run` and `kctl create`, and the CreateContainerRequest they make."""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli.common import env_from_host


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rm", action="store_true", help="remove the container once it exits")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--hostname")
    p.add_argument("--entrypoint")
    p.add_argument("--network", default="none", choices=("none", "host"))
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _labels(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def request(a: argparse.Namespace, auto_remove: bool) -> pb.CreateContainerRequest:
    return pb.CreateContainerRequest(
        image=a.image,
        args=a.command,
        entrypoint=[a.entrypoint] if a.entrypoint else [],
        entrypoint_set=a.entrypoint is not None,
        env=env_from_host(a.env),
        workdir=a.workdir or "",
        user=a.user or "",
        name=a.name or "",
        labels=_labels(a.label),
        hostname=a.hostname or "",
        network=a.network,
        auto_remove=auto_remove,
        tty=a.tty,
        open_stdin=a.interactive,
    )
