"""kettle.v1 methods: restart, pause, unpause, rename, update, filtered listing, info."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon.services import Context
from kettle.daemon.services.core import container_msg
from kettle.daemon.store import EXITED, PAUSED, RUNNING, Record
from kettle.errors import InvalidArgument

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon

_FILTER_KEYS = ("id", "name", "label", "status", "ancestor", "group", "exited")


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    """Docker's `key=value` filters: values of one key OR, different keys AND."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in _FILTER_KEYS:
            known = ", ".join(_FILTER_KEYS)
            raise InvalidArgument(f"filter {item!r}: use key=value with key one of {known}")
        out.setdefault(key, []).append(value)
    return out


def _label_matches(labels: dict[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def matches(rec: Record, filters: dict[str, list[str]]) -> bool:
    checks: dict[str, Callable[[str], bool]] = {
        "id": lambda v: rec.id.startswith(v),
        "name": lambda v: v in rec.name,
        "label": lambda v: _label_matches(rec.labels, v),
        "status": lambda v: rec.status == v,
        "ancestor": lambda v: rec.image == v or rec.image.split(":")[0] == v,
        "group": lambda v: rec.group == v,
        "exited": lambda v: rec.status == EXITED and str(rec.exit_code) == v,
    }
    return all(any(checks[k](v) for v in values) for k, values in filters.items())


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.containers = daemon.containers

    def list_containers(
        self, req: pb.ListContainersRequest, _ctx: Context
    ) -> pb.ListContainersResponse:
        filters = parse_filters(list(req.filters))
        recs = [r for r in self.containers.list(req.all or bool(filters)) if matches(r, filters)]
        if not req.all and "status" not in filters:
            recs = [r for r in recs if r.status != EXITED and r.status != "created"]
        return pb.ListContainersResponse(containers=[container_msg(r) for r in recs])

    def restart_container(self, req: pb.StopContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.restart(req.id, req.timeout))

    def pause_container(self, req: pb.ContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.pause(req.id))

    def unpause_container(self, req: pb.ContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.unpause(req.id))

    def rename_container(self, req: pb.RenameContainerRequest, _ctx: Context) -> pb.Container:
        return container_msg(self.containers.rename(req.id, req.name))

    def update_container(self, req: pb.UpdateContainerRequest, _ctx: Context) -> pb.Container:
        from kettle.daemon.spec import resources

        limits = resources(req.resources) if req.resources is not None else None
        if req.restart_set and req.restart is not None:
            from kettle.daemon import policy

            policy.policy_of(req.restart)
            policy.backoff_params(req.restart, policy.BackoffParams())
        restart = req.restart if req.restart_set else None
        return container_msg(self.containers.update(req.id, limits, restart))

    def info(self, _req: pb.Empty, _ctx: Context) -> pb.InfoResponse:
        from kettle.cgroups.host import detect_mode

        recs = self.containers.store.all()
        count = {s: sum(1 for r in recs if r.status == s) for s in (RUNNING, PAUSED)}
        cfg = self.d.config
        return pb.InfoResponse(
            version=_version(),
            root=cfg.root,
            state=cfg.state,
            cgroup_version=detect_mode(),
            runtime=cfg.runtime or "kettle (built in)",
            containers=len(recs),
            running=count[RUNNING],
            paused=count[PAUSED],
            stopped=len(recs) - count[RUNNING] - count[PAUSED],
            images=len(self.d.images.list()),
            kernel=os.uname().release,
        )


def _version() -> str:
    import kettle

    return kettle.__version__
