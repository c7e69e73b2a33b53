"""kettle.v1 methods: Exec, Attach and ResizeContainer (bidirectional streams of IOInput and
IOOutput).

Both streams answer with a first message before any output: Exec's carries the exec id,
Attach's is empty and means "attached" (kctl run starts the container only then, so that no
output is lost).  They end with a message with exited set and the exit status; when an exec
could not start at all, that last message has stream "error", the reason as data, and Docker's
126 or 127.  Input messages may carry stdin bytes, a window size, or close_stdin (the client's
input has ended: the process's stdin is closed; Attach's clients send it only for Docker's
stdin_once, `kctl run -i`).  A client that goes away leaves the process running, as Docker's
detach does."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

from kettle.api import kettle_pb as pb
from kettle.daemon import stdio
from kettle.daemon.execs import CannotExec, Exec, ExecOptions
from kettle.daemon.services import Context
from kettle.daemon.store import CREATED, EXITED, PAUSED, RESTARTING, RUNNING
from kettle.errors import FailedPrecondition, InvalidArgument, KettleError, NotFound

if TYPE_CHECKING:
    from kettle.daemon.bus import Subscription
    from kettle.daemon.context import Daemon

log = logging.getLogger("kettled")
#: how long the exit status of an attached run is awaited once its output has ended.
_EXIT_WAIT_S = 60.0
#: how often a quiet attach looks whether its container has been removed meanwhile.
_GONE_CHECK_S = 2.0


def _resize_quietly(what: str, resize: Callable[[int, int], None], size: pb.WindowSize) -> None:
    """A window size that cannot be applied is logged, not fatal: the stdin that follows it
    on the same stream must still reach the process (Docker logs a failed resize too)."""
    try:
        resize(size.width, size.height)
    except KettleError as e:
        log.warning("%s: resize to %dx%d: %s", what, size.width, size.height, e)


def _first(requests: Iterator[pb.IOInput], what: str) -> pb.IOInput:
    try:
        return next(requests)
    except StopIteration:
        raise InvalidArgument(f"{what}: the client sent nothing") from None


class Part:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.containers = daemon.containers

    # -- Exec ----------------------------------------------------------------------------------

    def exec(self, requests: Iterator[pb.IOInput], context: Context) -> Iterator[pb.IOOutput]:
        first = _first(requests, "exec")
        cfg = first.config
        if cfg is None or not cfg.id:
            raise InvalidArgument("exec: the first message must carry config with the container")
        size = cfg.size
        opts = ExecOptions(
            args=list(cfg.args),
            env=list(cfg.env),
            user=cfg.user,
            workdir=cfg.workdir,
            tty=cfg.tty,
            stdin=cfg.stdin,
            detach=cfg.detach,
            privileged=cfg.privileged,
            width=size.width if size is not None else 0,
            height=size.height if size is not None else 0,
        )
        ex = Exec(self.containers, cfg.id, opts)
        try:
            ex.start()
        except CannotExec as e:
            yield pb.IOOutput(exec_id=ex.id)
            yield pb.IOOutput(
                stream="error", data=str(e).encode(), exited=True, exit_code=e.exit_code
            )
            return
        yield pb.IOOutput(exec_id=ex.id)
        if opts.detach:
            return
        context.add_callback(ex.abandon_output)
        threading.Thread(
            target=self._exec_input, args=(ex, requests), name="exec-in", daemon=True
        ).start()
        try:
            for stream, data in ex.output():
                yield pb.IOOutput(stream=stream, data=data)
            if not context.is_active():
                return  # detached: the exec runs on, its waiter cleans up
            ex.done.wait()
            yield pb.IOOutput(exited=True, exit_code=ex.exit_code)
        finally:
            ex.abandon_output()

    @staticmethod
    def _exec_input(ex: Exec, requests: Iterator[pb.IOInput]) -> None:
        try:
            for msg in requests:
                if msg.stdin:
                    ex.write_stdin(msg.stdin)
                if msg.resize is not None and msg.resize.width and msg.resize.height:
                    _resize_quietly(f"exec {ex.id}", ex.resize, msg.resize)
                if msg.close_stdin:
                    ex.close_stdin()
        except KettleError as e:
            log.warning("exec %s: input: %s", ex.id, e)
        except Exception as e:  # the client went away (grpc raises its own errors here)
            log.debug("exec %s: input ended: %s", ex.id, e)

    # -- Attach --------------------------------------------------------------------------------

    def attach(self, requests: Iterator[pb.IOInput], context: Context) -> Iterator[pb.IOOutput]:
        first = _first(requests, "attach")
        ref = first.attach_id or (first.config.id if first.config is not None else "")
        if not ref:
            raise InvalidArgument("attach: the first message must carry attach_id")
        rec = self.containers.store.find(ref)
        cid = rec.id
        # Subscribed before the state is read: a die after it cannot be missed.
        sub, _past = self.d.bus.subscribe()
        try:
            rec = self.containers.store.find(cid)
            if rec.status not in (CREATED, RUNNING, PAUSED, RESTARTING):
                raise FailedPrecondition(
                    f"container {cid} is {rec.status}: you cannot attach to a stopped container, "
                    "start it first"
                )
            # A created container, or one waiting out a restart back-off: its next run.
            pending = rec.status in (CREATED, RESTARTING)
            att = stdio.attach(self.containers.bundle(cid), wait_for_start=pending)
            try:
                context.add_callback(att.close)
                yield pb.IOOutput()
                threading.Thread(
                    target=self._attach_input,
                    args=(cid, att.hub, requests),
                    name="attach-in",
                    daemon=True,
                ).start()
                while True:
                    try:
                        item = att.get(timeout=_GONE_CHECK_S)
                    except queue.Empty:
                        if self.containers.store.get(cid) is None:
                            raise NotFound(f"container {cid}: removed while attached") from None
                        continue
                    if item is None:
                        break
                    yield pb.IOOutput(stream=item[0], data=item[1])
                if att.overflowed:
                    raise FailedPrecondition(
                        f"attach {cid}: the client fell too far behind the container's output"
                    )
                if not context.is_active():
                    return
                yield pb.IOOutput(exited=True, exit_code=self._exit_code(cid, sub))
            finally:
                att.close()
        finally:
            sub.close()

    def _attach_input(self, cid: str, hub: stdio.Hub, requests: Iterator[pb.IOInput]) -> None:
        try:
            for msg in requests:
                if msg.stdin:
                    hub.write_stdin(msg.stdin)
                if msg.resize is not None and msg.resize.width and msg.resize.height:
                    _resize_quietly(f"attach {cid}", partial(self._resize, cid), msg.resize)
                if msg.close_stdin:
                    self._close_stdin(cid, hub)
        except KettleError as e:
            log.warning("attach %s: input: %s", cid, e)
        except Exception as e:  # the client went away (grpc raises its own errors here)
            log.debug("attach %s: input ended: %s", cid, e)

    def _close_stdin(self, cid: str, hub: stdio.Hub) -> None:
        hub.close_stdin()
        live = self.containers.live(cid)
        if live is not None:
            try:
                live.task.close_stdin()
            except KettleError as e:
                log.debug("container %s: close stdin: %s", cid, e)

    def _exit_code(self, cid: str, sub: Subscription) -> int:
        """The status of the run that just ended: from its die event (published before any
        auto-remove), else what the store recorded."""
        import time

        deadline = time.monotonic() + _EXIT_WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            ev = sub.get(timeout=min(left, 0.5))
            if ev is not None:
                if ev.type == "container" and ev.id == cid and ev.action == "die":
                    return int(ev.attributes.get("exitCode", "0"))
                continue
            rec = self.containers.store.get(cid)
            if rec is None:
                break
            if rec.status in (EXITED, RESTARTING) and sub.queue.empty():
                return rec.exit_code
        raise FailedPrecondition(f"container {cid}: its exit status could not be learnt")

    # -- ResizeContainer -----------------------------------------------------------------------

    def resize_container(self, req: pb.ExecConfig, _ctx: Context) -> pb.Empty:
        size = req.size
        if size is None or not size.width or not size.height:
            raise InvalidArgument("resize: size needs a width and a height")
        rec = self.containers.store.find(req.id)
        self._resize(rec.id, size.width, size.height)
        return pb.Empty()

    def _resize(self, cid: str, width: int, height: int) -> None:
        _rec, live = self.containers._running(cid)
        live.task.resize(width, height)
