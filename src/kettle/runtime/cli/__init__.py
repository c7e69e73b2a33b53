"""kettle-runtime: runc's command line over the kettle.runtime library.

Global flags come before the subcommand; each subcommand lives in its own module, imported only
when it runs, so a `kill` pays for nothing `create` needs.  A hand-written parser (not argparse)
keeps start-up cheap and accepts exactly what runc's callers send: `--flag value`,
`--flag=value`, single-dash long names and runc's short aliases.
"""

from __future__ import annotations

import os
import sys

from kettle.errors import InvalidArgument, KettleError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"

COMMANDS = (
    "create",
    "start",
    "run",
    "state",
    "kill",
    "delete",
    "exec",
    "ps",
    "list",
    "pause",
    "resume",
    "update",
    "events",
    "spec",
    "features",
    "checkpoint",
    "restore",
)


# Plain classes rather than dataclasses: importing dataclasses costs ~15 ms per runtime start.
class Flag:
    __slots__ = ("default", "dest", "kind", "names")

    def __init__(self, names: tuple[str, ...], dest: str, kind: str = "str", default: Any = None):
        self.names = names
        self.dest = dest
        self.kind = kind  # str | bool | int | list
        self.default = default


class Parsed:
    __slots__ = ("args", "values")

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = values or {}
        self.args: list[str] = []


def parse(argv: Sequence[str], flags: Sequence[Flag], stop_after: int | None = None) -> Parsed:
    """Parse flags (anywhere before the stop point) and positional arguments."""
    by_name: dict[str, Flag] = {}
    for f in flags:
        for n in f.names:
            by_name[n] = f
    out = Parsed({f.dest: ([] if f.kind == "list" else f.default) for f in flags})
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if stop_after is not None and len(out.args) >= stop_after:
            out.args.append(tok)
            continue
        if tok == "--":
            out.args.extend(argv[i:])
            break
        if not tok.startswith("-") or tok == "-":
            out.args.append(tok)
            continue
        name, eq, value = tok.partition("=")
        if not name.startswith("--") and len(name) > 2:
            name = "-" + name  # Go's flag package accepts -root as well as --root
        flag = by_name.get(name)
        if flag is None:
            raise InvalidArgument(f"flag provided but not defined: {tok.split('=')[0]}")
        if flag.kind == "bool":
            out.values[flag.dest] = value.lower() not in ("false", "0") if eq else True
            continue
        if not eq:
            if i >= len(argv):
                raise InvalidArgument(f"flag needs an argument: {name}")
            value = argv[i]
            i += 1
        if flag.kind == "int":
            try:
                out.values[flag.dest] = int(value)
            except ValueError:
                raise InvalidArgument(f"invalid value {value!r} for flag {name}") from None
        elif flag.kind == "list":
            out.values[flag.dest].append(value)
        else:
            out.values[flag.dest] = value
    return out


GLOBAL_FLAGS = (
    Flag(("--root",), "root"),
    Flag(("--log",), "log"),
    Flag(("--log-format",), "log_format", default="text"),
    Flag(("--debug",), "debug", "bool", False),
    Flag(("--systemd-cgroup",), "systemd_cgroup", "bool", False),
    Flag(("--criu",), "criu"),
    Flag(("--rootless",), "rootless", default="auto"),
    Flag(("--cgroup-manager",), "cgroup_manager"),
    Flag(("--version", "-v"), "version", "bool", False),
    Flag(("--help", "-h"), "help", "bool", False),
)


def _split_globals(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """(global flag tokens, subcommand, the rest)."""
    takes_value = {n for f in GLOBAL_FLAGS if f.kind != "bool" for n in f.names}
    glob: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("-"):
            return glob, tok, list(argv[i + 1 :])
        glob.append(tok)
        name = tok.split("=", 1)[0]
        if not name.startswith("--") and len(name) > 2:
            name = "-" + name
        if "=" not in tok and name in takes_value and i + 1 < len(argv):
            glob.append(argv[i + 1])
            i += 1
        i += 1
    return glob, None, []


USAGE = """usage: kettle-runtime [global options] command [command options] [arguments...]

commands: create, start, run, state, kill, delete, exec, ps, list, pause, resume, update,
          events, spec, features

global options: --root DIR, --log FILE, --log-format text|json, --debug, --systemd-cgroup,
                --rootless true|false|auto, --version
"""


def main(argv: Sequence[str] | None = None) -> int:
    from kettle.runtime.context import Context, Logger, default_root

    args = list(sys.argv[1:] if argv is None else argv)
    logger = Logger()
    try:
        glob_tokens, command, rest = _split_globals(args)
        g = parse(glob_tokens, GLOBAL_FLAGS).values
        if g["log_format"] not in ("text", "json"):
            raise InvalidArgument(f"invalid log-format: {g['log_format']}")
        logger.json_format = g["log_format"] == "json"
        logger.debug_enabled = bool(g["debug"])
        if g["log"]:
            logger.stream = open(g["log"], "a", buffering=1)  # noqa: SIM115 - lives for the run
            logger.to_stderr_too = True
        if g["version"]:
            sys.stdout.write(version_text())
            return 0
        if g["help"] or command in (None, "help"):
            sys.stdout.write(USAGE)
            return 0 if g["help"] or command == "help" else 1
        if command not in COMMANDS:
            raise InvalidArgument(f"no such command: {command}")
        if command in ("checkpoint", "restore"):
            from kettle.errors import Unimplemented

            raise Unimplemented(f"{command}: checkpoint/restore (criu) is not supported")
        rootless = _rootless(str(g["rootless"]))
        if g["systemd_cgroup"] and not os.path.isdir("/run/systemd/system"):
            from kettle.errors import FailedPrecondition

            raise FailedPrecondition(
                "systemd cgroup flag passed, but systemd support for managing cgroups is "
                "not available"
            )
        ctx = Context(
            root=os.path.abspath(g["root"] or default_root()),
            logger=logger,
            systemd_cgroup=bool(g["systemd_cgroup"]),
            rootless=rootless,
        )
        # __import__ rather than importlib: importing importlib costs ~3 ms a start.
        name = f"kettle.runtime.cli.{command}"
        __import__(name)
        module = sys.modules[name]
        code: int = module.main(ctx, rest)
        return code
    except KettleError as e:
        return _fail(logger, str(e), e.exit_code)
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        # An unexpected OS failure is still one clear line, with the path when there is one.
        where = f" {e.filename}" if e.filename else ""
        return _fail(logger, f"{(e.strerror or str(e)).lower()}{where}", 1)


def _rootless(value: str) -> bool:
    if value == "auto":
        return os.geteuid() != 0
    if value in ("true", "false"):
        return value == "true"
    raise InvalidArgument(f"invalid --rootless value: {value}")


def _fail(logger: Any, msg: str, code: int) -> int:
    logger.error(msg)
    if logger.stream is not None:
        # The log went to a file: the message goes to stderr as well (runc does the same;
        # conmon reads stderr, containerd's shim reads the log).
        sys.stderr.write(f"{msg}\n")
    return code


def version_text() -> str:
    from kettle.runtime import features

    return (
        f"kettle-runtime version {VERSION}\n"
        f"commit: kettle-{VERSION}\n"
        f"spec: {SPEC_VERSION}\n"
        f"go: none (python {sys.version.split()[0]})\n"
        f"libseccomp: {features.libseccomp_version()}\n"
    )
