"""kettle.v1 methods: volumes (create, list, inspect, remove).

A volume's users are found from the container records: a named volume in a container's create
request (recorded before its spec is built, so a container being created already counts), an
anonymous one through the container it was made for.  Anonymous volumes of a --rm container
go when their container does (kettled's destroy event)."""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon import volumes as volmod
from kettle.daemon.services import Context
from kettle.errors import FailedPrecondition, KettleError

if TYPE_CHECKING:
    from kettle.daemon.bus import Event, Subscription
    from kettle.daemon.context import Daemon
    from kettle.daemon.store import Record

log = logging.getLogger("kettled")


def _named_volumes(rec: Record) -> set[str]:
    try:
        config = json.loads(rec.config)
    except ValueError:
        return set()
    return {
        str(m.get("source"))
        for m in config.get("mounts") or []
        if m.get("type") == "volume" and m.get("source")
    }


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.volumes = volmod.for_root(daemon.config.root)
        self._sub: Subscription = daemon.bus.subscribe()[0]
        # Containers removed before this part listened (kettled's start-up reconcile).
        live = {r.id for r in daemon.containers.store.all()}
        for vol in self.volumes.all():
            if vol.anonymous_for and vol.remove_with_container and vol.anonymous_for not in live:
                self._remove_anonymous(vol)
        threading.Thread(target=self._reaper, name="volume-reaper", daemon=True).start()

    # -- users -----------------------------------------------------------------------------

    def used_by(self, vol: volmod.Volume, records: list[Record] | None = None) -> list[str]:
        """Ids of the containers that mount the volume."""
        recs = self.d.containers.store.all() if records is None else records
        if vol.anonymous_for:
            return [r.id for r in recs if r.id == vol.anonymous_for]
        return [r.id for r in recs if vol.name in _named_volumes(r)]

    def _msg(self, vol: volmod.Volume, records: list[Record] | None = None) -> pb.Volume:
        return pb.Volume(
            name=vol.name,
            mountpoint=vol.mountpoint,
            created_ns=vol.created_ns,
            labels=vol.labels,
            used_by=self.used_by(vol, records),
        )

    # -- methods ---------------------------------------------------------------------------

    def create_volume(self, req: pb.VolumeRequest, _ctx: Context) -> pb.Volume:
        vol, made = self.volumes.create(req.name, dict(req.labels))
        if made:
            self.d.bus.publish("volume", "create", vol.name, {"driver": "local"})
        return self._msg(vol)

    def list_volumes(self, _req: pb.Empty, _ctx: Context) -> pb.ListVolumesResponse:
        records = self.d.containers.store.all()
        return pb.ListVolumesResponse(volumes=[self._msg(v, records) for v in self.volumes.all()])

    def inspect_volume(self, req: pb.VolumeRequest, _ctx: Context) -> pb.Volume:
        return self._msg(self.volumes.get(req.name))

    def remove_volume(self, req: pb.VolumeRequest, _ctx: Context) -> pb.Empty:
        vol = self.volumes.get(req.name)
        users = self.used_by(vol)
        if users and not req.force:
            ids = ", ".join(u[:12] for u in users)
            raise FailedPrecondition(
                f"volume {vol.name} is in use by container {ids}: remove it first or use force"
            )
        self.volumes.remove(vol.name)
        self.d.bus.publish("volume", "destroy", vol.name, {"driver": "local"})
        return pb.Empty()

    # -- anonymous volumes of --rm containers ------------------------------------------------

    def _reaper(self) -> None:
        while True:
            ev = self._sub.get()
            if ev is not None and ev.type == "container" and ev.action == "destroy":
                self._container_gone(ev)

    def _container_gone(self, ev: Event) -> None:
        for vol in self.volumes.anonymous_of(ev.id):
            if vol.remove_with_container:
                self._remove_anonymous(vol)

    def _remove_anonymous(self, vol: volmod.Volume) -> None:
        try:
            self.volumes.remove(vol.name)
        except (KettleError, OSError) as e:
            log.error("volume %s of container %s: %s", vol.name, vol.anonymous_for, e)
            return
        self.d.bus.publish("volume", "destroy", vol.name, {"driver": "local"})
