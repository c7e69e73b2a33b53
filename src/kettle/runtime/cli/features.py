"""kettle-runtime features"""

from __future__ import annotations

from kettle.runtime.cli._common import print_json
from kettle.runtime.context import Context


def main(ctx: Context, argv: list[str]) -> int:
    from kettle.runtime.features import features

    print_json(features(), indent=4)
    return 0
