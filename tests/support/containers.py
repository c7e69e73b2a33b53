"""Per-test bookkeeping of containers: always `delete --force`, reap, check for leaks."""

from __future__ import annotations

import shutil
from typing import Any

from tests.support import leaks
from tests.support.bundle import Bundle, BundleFactory
from tests.support.runtime import Result, Runtime


class Containers:
    """Creates bundles and containers for one test and cleans all of them up afterwards."""

    def __init__(self, runtime: Runtime, bundles: BundleFactory) -> None:
        self.runtime = runtime
        self.bundles = bundles
        self.tracked: dict[str, Bundle | None] = {}
        self.pids: dict[str, list[int]] = {}

    def bundle(self, *args: str, id: str | None = None) -> Bundle:
        """A new bundle (written) whose container this object will clean up."""
        bundle = self.bundles.make(*args, id=id)
        self.tracked[bundle.id] = bundle
        return bundle

    def track(self, cid: str, pid: int | None = None) -> None:
        self.tracked.setdefault(cid, None)
        if pid:
            self.pids.setdefault(cid, []).append(pid)

    def create(self, bundle: Bundle, *flags: str) -> dict[str, Any]:
        """create + state; remembers the init pid for the leak check."""
        bundle.write()
        self.track(bundle.id)
        self.runtime.create(bundle, *flags)
        state = self.runtime.state(bundle.id)
        self.track(bundle.id, state["pid"])
        return state

    def start(self, bundle: Bundle, *flags: str) -> dict[str, Any]:
        """create + start; returns the state right after start."""
        self.create(bundle, *flags)
        self.runtime.start(bundle.id)
        return self.runtime.state(bundle.id)

    def run(self, bundle: Bundle, *flags: str, timeout: float = 30) -> Result:
        """Foreground `run`, output captured (the container's stdout is the probe's report)."""
        bundle.write()
        self.track(bundle.id)
        return self.runtime(
            "run", "--bundle", str(bundle.path), *flags, bundle.id, check=False, timeout=timeout
        )

    def cleanup(self) -> list[str]:
        """Force-deletes everything tracked and returns what was left behind."""
        problems: list[str] = []
        for cid in self.tracked:
            self.runtime("delete", "--force", cid, check=False, timeout=30)
        for cid, bundle in self.tracked.items():
            found = leaks.leaks_of(cid, bundle.path if bundle else None, self.pids.get(cid, []))
            problems += found
            # A leaked bind mount under the bundle would make rmtree delete through it.
            if bundle is not None and not any(p.startswith("mount:") for p in found):
                shutil.rmtree(bundle.path, ignore_errors=True)
        leaks.reap_zombie_children()
        return problems
