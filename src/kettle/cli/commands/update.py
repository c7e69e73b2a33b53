"""kctl update [--memory ...] [--cpus ...] [--pids-limit ...] [--restart POLICY] CONTAINER..."""

from __future__ import annotations

import argparse

from kettle.api import kettle_pb as pb
from kettle.cli import runflags
from kettle.cli.common import out
from kettle.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "change a container's resource limits (live) or restart policy"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--memory", help="memory limit (e.g. 256m)")
    p.add_argument("--memory-swap", help="memory + swap limit (-1: unlimited swap)")
    p.add_argument("--memory-reservation", help="memory soft limit")
    p.add_argument("--cpus", help="number of CPUs (e.g. 1.5)")
    p.add_argument("--cpu-shares", type=int, help="relative CPU weight")
    p.add_argument("--cpuset-cpus", help="CPUs allowed (e.g. 0-1)")
    p.add_argument("--pids-limit", type=int, help="most processes (-1: unlimited)")
    p.add_argument("--restart", help="no, on-failure[:N], always or unless-stopped")
    p.add_argument("containers", nargs="+")


def request(a: argparse.Namespace, ref: str) -> pb.UpdateContainerRequest:
    r = pb.Resources()
    if a.memory:
        r.memory = runflags.parse_size(a.memory, "--memory")
    if a.memory_swap:
        r.memory_swap = runflags.parse_memory_swap(a.memory_swap)
    if a.memory_reservation:
        r.memory_reservation = runflags.parse_size(a.memory_reservation, "--memory-reservation")
    if a.cpus:
        r.nano_cpus = runflags.parse_cpus(a.cpus)
    if a.cpu_shares is not None:
        r.cpu_shares = a.cpu_shares
    if a.cpuset_cpus:
        r.cpuset_cpus = a.cpuset_cpus
    if a.pids_limit is not None:
        r.pids_limit = a.pids_limit
    has_limits = r != pb.Resources()
    if not has_limits and a.restart is None:
        raise InvalidArgument("update: nothing to change (give a limit or --restart)")
    req = pb.UpdateContainerRequest(id=ref, resources=r if has_limits else None)
    if a.restart is not None:
        req.restart = runflags.parse_restart(a.restart)
        req.restart_set = True
    return req


def run(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        client.call("UpdateContainer", request(a, ref), pb.Container)
        out(ref)
    return 0
