"""kctl: Docker's verbs against kettled.  `kctl [--address SOCK] COMMAND ...`.

Start-up stays cheap: only the module of the verb given is imported, and grpc only once a
command talks to the daemon."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from kettle.api import DEFAULT_ADDRESS
from kettle.errors import KettleError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: verb -> module under kettle.cli.commands (Docker's verbs; one module each).
COMMANDS: dict[str, str] = {
    "run": "run",
    "create": "create",
    "start": "start",
    "stop": "stop",
    "restart": "restart",
    "kill": "kill",
    "pause": "pause",
    "unpause": "unpause",
    "rm": "rm",
    "rename": "rename",
    "update": "update",
    "ps": "ps",
    "logs": "logs",
    "inspect": "inspect",
    "wait": "wait",
    "top": "top",
    "stats": "stats",
    "exec": "exec_",
    "attach": "attach",
    "cp": "cp",
    "events": "events",
    "scale": "scale",
    "pull": "pull",
    "images": "images",
    "image": "image",
    "rmi": "rmi",
    "tag": "tag",
    "load": "load",
    "save": "save",
    "login": "login",
    "logout": "logout",
    "volume": "volume",
    "info": "info",
    "version": "version",
    "completion": "completion",
}
#: verbs whose failure to run the container itself exits 125, as Docker's.
_RUN_VERBS = frozenset(("run",))


def _module(verb: str) -> ModuleType | None:
    name = f"kettle.cli.commands.{COMMANDS[verb]}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return None


#: global options that take a value.
_VALUED = frozenset(("--address", "--tlscacert", "--tlscert", "--tlskey"))


def _verb(argv: list[str]) -> str | None:
    """The first word that is not a global option (or its value)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _VALUED:
            i += 2
            continue
        if word.startswith("-"):
            i += 1
            continue
        return word
    return None


def _columns() -> int:
    """shutil.get_terminal_size's answer, without importing shutil (and with it bz2 and lzma,
    ~2.5 ms of every kctl start)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (ValueError, OSError):
            columns = 0  # not a terminal (or closed): argparse's fallback width
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, given its width: argparse's own asks shutil for it, and makes one
    on every add_argument."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _columns() - 2)


class _Parser(argparse.ArgumentParser):
    """Every parser of kctl (add_subparsers makes its subparsers of this class too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def parser(verbs: list[str]) -> argparse.ArgumentParser:
    p = _Parser(prog="kctl", description="Kettle's command line")
    p.add_argument(
        "--address",
        default=os.environ.get("KETTLE_ADDRESS", DEFAULT_ADDRESS),
        help="kettled's socket, or tcp://HOST:PORT (default $KETTLE_ADDRESS or %(default)s)",
    )
    tls_dir = os.environ.get("KETTLE_CERT_PATH", os.path.expanduser("~/.kettle"))
    for flag, name, what in (
        ("--tlscacert", "ca.pem", "CA of kettled's certificate"),
        ("--tlscert", "cert.pem", "client certificate"),
        ("--tlskey", "key.pem", "client key"),
    ):
        p.add_argument(flag, default=os.path.join(tls_dir, name), help=f"{what} (tcp://)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for verb in verbs:
        mod = _module(verb)
        if mod is None:
            continue
        sp = sub.add_parser(verb, help=mod.HELP, description=mod.HELP)
        mod.configure(sp)
        sp.set_defaults(fn=mod.run, offline=getattr(mod, "OFFLINE", False))
    return p


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verb = _verb(args)
    verbs = [verb] if verb in COMMANDS else list(COMMANDS)
    a = parser(verbs).parse_args(args)
    if a.offline:
        # Commands that need no daemon (completion) take (None, args).
        code: int = a.fn(None, a)
        return code
    from kettle.cli.client import Client, TLSFiles

    try:
        tls = TLSFiles(a.tlscacert, a.tlscert, a.tlskey)
        client = Client(a.address, tls if a.address.startswith("tcp://") else None)
    except KettleError as e:
        print(f"kctl: {e}", file=sys.stderr)
        return 1
    try:
        code = a.fn(client, a)
        return code
    except KettleError as e:
        print(f"kctl: {e}", file=sys.stderr)
        return 125 if a.cmd in _RUN_VERBS else 1
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
