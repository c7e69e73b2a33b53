"""kettle.v1 methods: Stats (resource use, streamed each second) and Top (a container's
processes, as `ps -ef` shows them)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon import stats as statsmod
from kettle.daemon.services import Context
from kettle.daemon.store import PAUSED, RUNNING, Record
from kettle.errors import FailedPrecondition, KettleError

if TYPE_CHECKING:
    from kettle.cgroups.manager import Manager
    from kettle.daemon.context import Daemon

log = logging.getLogger("kettled")

#: seconds between two samples of a stream (Docker's).
INTERVAL_S = 1.0


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.containers = daemon.containers
        self.interval_s = INTERVAL_S
        #: (container id, started_ns) -> its cgroup manager: v1 hosts read mountinfo to find
        #: the hierarchies, which need not happen every second for every container.
        self._managers: dict[tuple[str, int], Manager] = {}
        self._guard = threading.Lock()

    # -- Stats -----------------------------------------------------------------------------

    def stats(self, req: pb.StatsRequest, ctx: Context) -> Iterator[pb.StatsResponse]:
        store = self.containers.store
        # Unknown names fail the call before the first message, as Docker's do.
        named = [store.find(ref).id for ref in req.ids]
        gone = threading.Event()
        if ctx is not None:
            ctx.add_callback(gone.set)
        while True:
            if named:
                recs = [r for r in (store.get(cid) for cid in named) if r is not None]
                if not recs:
                    return  # every container asked for was removed
            else:
                recs = [r for r in store.all() if r.status in (RUNNING, PAUSED)]
            yield pb.StatsResponse(stats=[self._one(r) for r in recs])
            if not req.stream:
                return
            if gone.wait(self.interval_s) or (ctx is not None and not ctx.is_active()):
                return

    def _manager(self, rec: Record) -> Manager:
        key = (rec.id, rec.started_ns)
        with self._guard:
            mgr = self._managers.get(key)
        if mgr is None:
            path = statsmod.cgroups_path(rec.spec, rec.id)
            mgr = statsmod.manager(path, rec.id)
            with self._guard:
                # Drop the managers of earlier runs and of containers that are gone.
                for old in [k for k in self._managers if k[0] == rec.id]:
                    del self._managers[old]
                self._managers[key] = mgr
        return mgr

    def _forget(self, cid: str) -> None:
        with self._guard:
            for key in [k for k in self._managers if k[0] == cid]:
                del self._managers[key]

    def _one(self, rec: Record) -> pb.ContainerStats:
        msg = pb.ContainerStats(id=rec.id, name=rec.name)
        if rec.status not in (RUNNING, PAUSED) or rec.pid <= 0:
            self._forget(rec.id)
            return msg  # not running: no figures (kctl shows "--")
        try:
            s = statsmod.sample(self._manager(rec), rec.pid)
        except (KettleError, OSError) as e:
            # It exited between listing and reading: reported as not running this time.
            log.debug("stats of container %s: %s", rec.id, e)
            self._forget(rec.id)
            return msg
        msg.read_ns = s.read_ns
        msg.cpu_usage_ns = s.cpu_usage_ns
        msg.system_ns = s.system_ns
        msg.online_cpus = s.online_cpus
        msg.memory_usage = s.memory_usage
        msg.memory_limit = s.memory_limit
        msg.pids = s.pids
        msg.net_rx = s.net_rx
        msg.net_tx = s.net_tx
        msg.block_read = s.block_read
        msg.block_write = s.block_write
        return msg

    # -- Top -------------------------------------------------------------------------------

    def top(self, req: pb.TopRequest, _ctx: Context) -> pb.TopResponse:
        rec = self.containers.store.find(req.id)
        if rec.status not in (RUNNING, PAUSED) or rec.pid <= 0:
            raise FailedPrecondition(f"container {rec.id} is not running")
        mgr = statsmod.manager(statsmod.cgroups_path(rec.spec, rec.id), rec.id)
        if not mgr.exists():
            raise FailedPrecondition(f"container {rec.id} is not running (its cgroup is gone)")
        rows = statsmod.top(mgr.pids())
        return pb.TopResponse(
            titles=list(statsmod.TOP_TITLES), rows=[pb.TopRow(cells=r) for r in rows]
        )
