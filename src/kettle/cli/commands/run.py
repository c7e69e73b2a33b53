"""kctl run [flags] IMAGE [COMMAND...]"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.cli import runflags
from kettle.cli.commands.create import create
from kettle.cli.commands.logs import copy_logs
from kettle.cli.common import out
from kettle.errors import KettleError

if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "create and start a container"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true")
    runflags.add_flags(p)


def run(client: Client, a: argparse.Namespace) -> int:
    # Foreground --rm is done here once the output has been copied; detached, kettled does it.
    c = create(client, runflags.request(a, auto_remove=a.rm and a.detach))
    try:
        client.call("StartContainer", pb.ContainerRequest(id=c.id), pb.Container)
    except KettleError:
        if a.rm:
            client.call("RemoveContainer", pb.RemoveContainerRequest(id=c.id, force=True), pb.Empty)
        raise
    if a.detach:
        out(c.id)
        return 0
    copy_logs(client, c.id, follow=True, tail=-1)
    code = client.call("Wait", pb.ContainerRequest(id=c.id), pb.WaitResponse).exit_code
    if a.rm:
        client.call("RemoveContainer", pb.RemoveContainerRequest(id=c.id, force=True), pb.Empty)
    return code
