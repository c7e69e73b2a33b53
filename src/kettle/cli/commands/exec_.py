"""kctl exec [-i] [-t] [-d] [-e K=V] [-u USER] [-w DIR] [--privileged] CONTAINER CMD..."""

from __future__ import annotations

import argparse
import os
import sys

from kettle.api import kettle_pb as pb
from kettle.cli.common import env_from_host
from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "run a command in a running container"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user", default="")
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("--privileged", action="store_true", help="every capability")
    p.add_argument("--detach-keys", default="", help="keys that detach (default ctrl-p,ctrl-q)")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)


def run(client: Client, a: argparse.Namespace) -> int:
    from kettle.cli import terminal

    if not a.command:
        raise InvalidArgument("exec: no command given")
    keys = terminal.parse_detach_keys(a.detach_keys)
    stdin = a.interactive and not a.detach
    if a.tty and stdin and not os.isatty(sys.stdin.fileno()):
        raise InvalidArgument("the input device is not a tty (drop -t, or run from a terminal)")
    width, height = terminal.size(sys.stdout.fileno()) if a.tty else (0, 0)
    cfg = pb.ExecConfig(
        id=a.container,
        args=a.command,
        env=env_from_host(a.env),
        user=a.user,
        workdir=a.workdir,
        tty=a.tty,
        stdin=stdin,
        detach=a.detach,
        privileged=a.privileged,
        size=pb.WindowSize(width=width, height=height) if width and height else None,
    )
    stream = client.bidi("Exec", pb.IOInput(config=cfg), pb.IOOutput)
    tty = a.tty and not a.detach
    session = terminal.Session(stream, stdin=stdin, tty=tty, detach_keys=keys, close_at_eof=True)
    if session.first() is None:
        return session.finish(None)
    last = session.interact()
    if a.detach and last is None:
        return 0  # started: the stream ends at once (it has an exit only when it could not)
    return session.finish(last)
