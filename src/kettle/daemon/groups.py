"""Replica groups: N identical containers NAME-1..NAME-N, each supervised on its own.

The group keeps the members' template; scaling creates the missing members (lowest free
index first) or removes the highest-numbered ones."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.api.convert import from_dict, to_dict
from kettle.daemon.store import GroupRecord, Record
from kettle.errors import AlreadyExists, InvalidArgument, NotFound

if TYPE_CHECKING:
    from kettle.daemon.containers import Containers

log = logging.getLogger("kettled")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
MAX_REPLICAS = 1000


def member_index(group: str, name: str) -> int:
    """N of member NAME-N (0 if the name is not a member name)."""
    prefix = group + "-"
    tail = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else 0


class Groups:
    def __init__(self, containers: Containers) -> None:
        self.c = containers
        self._lock = threading.Lock()  # one scale at a time keeps member numbering simple

    def members(self, name: str) -> list[Record]:
        recs = [r for r in self.c.store.all() if r.group == name]
        return sorted(recs, key=lambda r: member_index(name, r.name))

    def get(self, name: str) -> GroupRecord:
        group = self.c.store.get_group(name)
        if group is None:
            raise NotFound(f"no such group: {name}")
        return group

    def scale(
        self, name: str, replicas: int, template: pb.CreateContainerRequest | None, start: bool
    ) -> GroupRecord:
        if not _NAME.match(name):
            raise InvalidArgument(f"group name {name!r}: use letters, digits, _ . -")
        if not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"replicas {replicas}: between 0 and {MAX_REPLICAS}")
        with self._lock:
            group = self.c.store.get_group(name)
            if group is not None and template is not None and template.image:
                raise AlreadyExists(f"group {name} already exists: change it with kctl scale")
            if group is None:
                if template is None or not template.image:
                    raise NotFound(f"no such group: {name} (a new group needs an image)")
                try:
                    self.c.store.find(name)
                except NotFound:
                    pass
                else:
                    raise AlreadyExists(f"group name {name}: a container has that name")
                if template.auto_remove:
                    raise InvalidArgument("replicas: --rm does not go with a group")
                tmpl = pb.CreateContainerRequest.decode(template.encode())
                tmpl.name = ""
                group = GroupRecord(name, 0, json.dumps(to_dict(tmpl)), time.time_ns())
                self.c.store.put_group(group)
                self.c.bus.publish("group", "create", name, {"name": name})
            group.replicas = replicas
            self.c.store.put_group(group)
            self._converge(group, start)
            self.c.bus.publish("group", "scale", name, {"name": name, "replicas": str(replicas)})
        return group

    def _converge(self, group: GroupRecord, start: bool) -> None:
        members = self.members(group.name)
        have = {member_index(group.name, r.name) for r in members}
        for rec in members[group.replicas :][::-1]:
            self.c.remove(rec.id, force=True)
        missing = group.replicas - min(len(members), group.replicas)
        index = 1
        while missing > 0:
            while index in have:
                index += 1
            req = from_dict(pb.CreateContainerRequest, json.loads(group.template))
            req.name = f"{group.name}-{index}"
            req.group = group.name
            rec = self.c.create(req)
            if start:
                self.c.start(rec.id)
            have.add(index)
            missing -= 1

    def remove(self, name: str) -> None:
        with self._lock:
            self.get(name)
            for rec in self.members(name):
                try:
                    self.c.remove(rec.id, force=True)
                except NotFound:
                    pass  # removed meanwhile
            self.c.store.delete_group(name)
        self.c.bus.publish("group", "destroy", name, {"name": name})

    def close(self) -> None:
        pass


def group_msg(groups: Groups, group: GroupRecord) -> pb.Group:
    return pb.Group(
        name=group.name,
        replicas=group.replicas,
        members=[r.name for r in groups.members(group.name)],
        config_json=group.template,
    )
