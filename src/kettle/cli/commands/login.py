"""kctl login [-u USER] [-p PASS | --password-stdin] [SERVER]"""

from __future__ import annotations

import argparse
import sys

from kettle.api import kettle_pb as pb
from kettle.cli.common import out
from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "log kettled in to a registry (credentials are checked, then kept by kettled)"
DEFAULT_SERVER = "docker.io"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="insecure: other users see it; see --password-stdin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("server", nargs="?", default=DEFAULT_SERVER, help="registry host[:port]")


def credentials(a: argparse.Namespace) -> tuple[str, str]:
    if a.password is not None and a.password_stdin:
        raise InvalidArgument("login: --password and --password-stdin are mutually exclusive")
    user = a.username
    interactive = sys.stdin.isatty()
    if not user:
        if a.password_stdin or not interactive:
            raise InvalidArgument("login: give the username with -u")
        user = input("Username: ").strip()
        if not user:
            raise InvalidArgument("login: a username is needed")
    if a.password_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    elif a.password is not None:
        print("WARNING! Using --password on the command line is insecure; use --password-stdin.",
              file=sys.stderr)  # fmt: skip
        password = a.password
    elif interactive:
        import getpass

        password = getpass.getpass("Password: ")
    else:
        raise InvalidArgument("login: no password: use --password-stdin or -p")
    if not password:
        raise InvalidArgument("login: the password is empty")
    return user, password


def run(client: Client, a: argparse.Namespace) -> int:
    user, password = credentials(a)
    req = pb.LoginRequest(server=a.server, username=user, password=password)
    client.call("Login", req, pb.Empty)
    out("Login Succeeded")
    return 0
