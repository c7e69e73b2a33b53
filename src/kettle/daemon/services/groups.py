"""kettle.v1 methods: replica groups (run --replicas, scale, rm of a group)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon.groups import Groups, group_msg
from kettle.daemon.services import Context

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.groups = Groups(daemon.containers)

    def scale_group(self, req: pb.ScaleRequest, _ctx: Context) -> pb.Group:
        group = self.groups.scale(req.name, req.replicas, req.template, req.start)
        return group_msg(self.groups, group)

    def list_groups(self, _req: pb.Empty, _ctx: Context) -> pb.ListGroupsResponse:
        found = self.groups.c.store.groups()
        return pb.ListGroupsResponse(groups=[group_msg(self.groups, g) for g in found])

    def remove_group(self, req: pb.GroupRequest, _ctx: Context) -> pb.Empty:
        self.groups.remove(req.name)
        return pb.Empty()
