"""Test doubles for the shim's service: a scripted runtime backend, stdio that opens nothing,
a publisher that records, and a reaper whose exits the test delivers by hand."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kettle.errors import FailedPrecondition, NotFound
from kettle.proto._wire import Message
from kettle.shim.config import ShimConfig


class FakeReaper:
    def __init__(self) -> None:
        self.watchers: dict[int, Callable[[int], None]] = {}
        self.holds = 0

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        self.watchers[pid] = callback

    def unwatch(self, pid: int) -> None:
        self.watchers.pop(pid, None)

    def hold(self) -> FakeReaper:
        return self

    def __enter__(self) -> None:
        self.holds += 1

    def __exit__(self, *exc: object) -> None:
        self.holds -= 1

    def exit(self, pid: int, status: int) -> None:
        self.watchers.pop(pid)(status)


class FakeBackend:
    """Records calls; pids are handed out from 1000 up; `on_start` runs inside start()."""

    def __init__(self, reaper: FakeReaper) -> None:
        self.reaper = reaper
        self.calls: list[tuple[Any, ...]] = []
        self.next_pid = 1000
        self.running: dict[str, set[int]] = {}
        self.on_start: Callable[[int], None] | None = None
        self.stats_data: dict[str, Any] = {
            "pids": {"current": 1},
            "memory": {"usage": {"usage": 5}},
        }
        self.fail: dict[str, Exception] = {}

    def _pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def _maybe_fail(self, verb: str) -> None:
        if verb in self.fail:
            raise self.fail[verb]

    def create(self, cid: str, bundle: str, stdio: list[int | None], console: str | None) -> int:
        self.calls.append(("create", cid, bundle))
        self._maybe_fail("create")
        pid = self._pid()
        self.running[cid] = {pid}
        return pid

    def start(self, cid: str) -> None:
        self.calls.append(("start", cid))
        self._maybe_fail("start")
        if self.on_start is not None:
            self.on_start(min(self.running[cid]))

    def kill(self, cid: str, sig: int, all_processes: bool) -> None:
        self.calls.append(("kill", cid, sig, all_processes))
        if cid not in self.running:
            raise NotFound(f"container {cid} does not exist")

    def delete(self, cid: str, force: bool) -> None:
        self.calls.append(("delete", cid, force))
        self.running.pop(cid, None)

    def exec(
        self,
        cid: str,
        exec_id: str,
        bundle: str,
        process: dict[str, Any],
        stdio: list[int | None],
        console: str | None,
    ) -> int:
        self.calls.append(("exec", cid, exec_id, process["args"]))
        self._maybe_fail("exec")
        pid = os.getpid()  # a live pid, so pidfd_open works; never signalled by the tests
        self.running[cid].add(pid)
        return pid

    def pause(self, cid: str) -> None:
        self.calls.append(("pause", cid))

    def resume(self, cid: str) -> None:
        self.calls.append(("resume", cid))

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        self.calls.append(("update", cid, resources))

    def pids(self, cid: str) -> list[int]:
        return sorted(self.running.get(cid, ()))

    def stats(self, cid: str) -> dict[str, Any]:
        if cid not in self.running:
            raise FailedPrecondition(f"container not running: {cid}")
        return self.stats_data


class FakeIO:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.child: list[int | None] = [None, None, None]
        self.console_socket = "/fake/console.sock" if kwargs.get("terminal") else None
        self.opened = self.started_ = self.closed = self.stdin_closed = False
        self.resized: tuple[int, int] | None = None

    def open(self) -> None:
        self.opened = True

    def started(self) -> None:
        self.started_ = True

    def close(self) -> None:
        self.closed = True

    def close_stdin(self) -> None:
        self.stdin_closed = True

    def resize(self, width: int, height: int) -> None:
        self.resized = (width, height)

    def output_done(self) -> bool:
        return True

    def wait_output(self, timeout: float) -> None:
        return None


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[Message] = []

    def publish(self, event: Message) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


class FakeLoop:
    def __init__(self) -> None:
        self.later: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.later.append((delay, fn))

    def call_soon(self, fn: Callable[[], None]) -> None:
        fn()


def make_bundle(
    base: Path, name: str, pidns: bool = True, annotations: dict[str, str] | None = None
) -> str:
    bundle = base / name
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    namespaces = [{"type": "mount"}] + ([{"type": "pid"}] if pidns else [])
    config = {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": namespaces},
        "annotations": annotations or {},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    return str(bundle)


def backend_factory(backend: FakeBackend) -> Callable[[ShimConfig, str], FakeBackend]:
    def make(cfg: ShimConfig, bundle: str) -> FakeBackend:
        return backend

    return make
