"""kettle.v1 methods: CopyOut and CopyIn (kctl cp), served by kettle.daemon.copy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon import copy
from kettle.errors import InvalidArgument

if TYPE_CHECKING:
    from kettle.daemon.context import Daemon
    from kettle.daemon.services import Context


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def copy_out(self, req: pb.CopyOutRequest, context: Context) -> Iterator[pb.TarChunk]:
        """The first chunk carries the path's stat, the others the tar stream."""
        for item in copy.copy_out(self.d.containers, req.id, req.path):
            if isinstance(item, copy.PathInfo):
                yield pb.TarChunk(
                    id=req.id,
                    path=req.path,
                    stat=pb.PathStat(
                        name=item.name,
                        size=item.size,
                        mode=item.mode,
                        mtime_ns=item.mtime_ns,
                        link_target=item.link_target,
                    ),
                )
            else:
                yield pb.TarChunk(data=item)

    def copy_in(self, request: Iterator[pb.TarChunk], context: Context) -> pb.Empty:
        """The first chunk names the container and the directory; every chunk carries tar."""
        first = next(request, None)
        if first is None or not first.id:
            raise InvalidArgument("copy in: the first chunk must name the container")
        if not first.path:
            raise InvalidArgument(f"copy in to {first.id}: the first chunk must name a directory")
        data = (c.data for c in request)
        source = copy.ChunkReader(first.data, data)
        copy.copy_in(self.d.containers, first.id, first.path, source, first.keep_ownership)
        return pb.Empty()
