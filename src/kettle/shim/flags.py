"""The shim's command line, parsed the way Go's ``flag`` package parses it.

containerd runs ``<shim> -namespace NS -address ADDR -publish-binary BIN -id ID [-debug]
start`` (and ``... -bundle B delete``); the long-lived process gets the same flags without an
action.  Go accepts ``-flag value``, ``--flag value``, ``-flag=value``, and for booleans only
``-flag`` or ``-flag=true|false``; parsing stops at the first non-flag argument or ``--``.
"""

from __future__ import annotations

from kettle.errors import InvalidArgument

_STRINGS = ("namespace", "id", "address", "publish-binary", "bundle", "socket")
_BOOLS = ("debug", "v", "info")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class Flags:
    __slots__ = (
        "action",
        "address",
        "bundle",
        "debug",
        "id",
        "info",
        "namespace",
        "publish_binary",
        "socket",
        "version",
    )

    def __init__(self) -> None:
        self.namespace = ""
        self.id = ""
        self.address = ""
        self.publish_binary = ""
        self.bundle = ""
        self.socket = ""
        self.debug = False
        self.version = False
        self.info = False
        #: "start", "delete", or "" for the long-lived serving process
        self.action = ""


def parse(argv: list[str]) -> Flags:
    out = Flags()
    strings: dict[str, str] = {}
    bools: dict[str, bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in _BOOLS:
            if value is None or value in _TRUE:
                bools[name] = True
            elif value in _FALSE:
                bools[name] = False
            else:
                raise InvalidArgument(f'invalid boolean value "{value}" for -{name}')
        elif name in _STRINGS:
            if value is None:
                if i + 1 >= len(argv):
                    raise InvalidArgument(f"flag needs an argument: -{name}")
                i += 1
                value = argv[i]
            strings[name] = value
        else:
            raise InvalidArgument(f"flag provided but not defined: -{name}")
        i += 1
    rest = argv[i:]
    if len(rest) > 1:
        raise InvalidArgument(f"unexpected arguments after {rest[0]}: {' '.join(rest[1:])}")
    if rest and rest[0] not in ("start", "delete"):
        raise InvalidArgument(f"unknown action {rest[0]!r} (expected start or delete)")
    out.action = rest[0] if rest else ""
    out.namespace = strings.get("namespace", "")
    out.id = strings.get("id", "")
    out.address = strings.get("address", "")
    out.publish_binary = strings.get("publish-binary", "")
    out.bundle = strings.get("bundle", "")
    out.socket = strings.get("socket", "")
    out.debug = bools.get("debug", False)
    out.version = bools.get("v", False)
    out.info = bools.get("info", False)
    return out
