"""kctl attach [--detach-keys KEYS] [--no-stdin] CONTAINER"""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "attach kctl's stdin and stdout to a running container"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detach-keys", default="", help="keys that detach (default ctrl-p,ctrl-q)")
    p.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    p.add_argument("container")


def run(client: Client, a: argparse.Namespace) -> int:
    """The container's output from now on, until it exits (kctl exits with its status) or the
    detach keys; kctl's input goes to the container's stdin when it keeps one (-i).  The end
    of kctl's input leaves the container's stdin open for the next attach (Docker's attach
    to a container made without stdin_once)."""
    from kettle.cli import terminal

    keys = terminal.parse_detach_keys(a.detach_keys)
    c = client.call("InspectContainer", pb.ContainerRequest(id=a.container), pb.Container)
    stdin = c.open_stdin and not a.no_stdin
    stream = client.bidi("Attach", pb.IOInput(attach_id=c.id), pb.IOOutput)
    session = terminal.Session(stream, stdin=stdin, tty=c.tty, detach_keys=keys, close_at_eof=False)
    if session.first() is None:
        return session.finish(None)
    return session.finish(session.interact())
