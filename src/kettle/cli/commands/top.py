"""kctl top CONTAINER"""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli.common import out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "a container's processes"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("container")


def run(client: Client, a: argparse.Namespace) -> int:
    from kettle.cli.format import table

    resp = client.call("Top", pb.TopRequest(id=a.container), pb.TopResponse)
    titles = list(resp.titles)
    rows = [list(r.cells) for r in resp.rows]
    # The last column (CMD) may be ragged; pad rows so the table lines up.
    rows = [r + [""] * (len(titles) - len(r)) for r in rows]
    out(table(titles, rows))
    return 0
