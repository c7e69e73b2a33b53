"""kettle-runtime spec [--bundle DIR] [--rootless]: write a default config.json."""

from __future__ import annotations

import json
import os

from kettle.errors import AlreadyExists
from kettle.runtime.cli import Flag, parse
from kettle.runtime.context import Context

FLAGS = (
    Flag(("--bundle", "-b"), "bundle", default="."),
    Flag(("--rootless",), "rootless", "bool", False),
)


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.defaults import default_spec, rootless_spec

    v = parse(argv, FLAGS).values
    path = os.path.join(v["bundle"], "config.json")
    if os.path.exists(path):
        raise AlreadyExists(f"file {path} exists: remove it first")
    config = rootless_spec() if v["rootless"] else default_spec()
    with open(path, "w") as f:
        json.dump(config, f, indent="\t")
        f.write("\n")
    return 0
