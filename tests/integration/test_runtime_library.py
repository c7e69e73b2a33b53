"""The runtime as a library (how the shim uses it): a failed create leaks nothing in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kettle.errors import InvalidArgument
from kettle.runtime.context import Context
from kettle.runtime.create import CreateOptions, create
from tests.support.bundle import BundleFactory

pytestmark = pytest.mark.privileged


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_failed_create_closes_every_fd_and_removes_its_state(
    bundles: BundleFactory, runtime_root: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    bundle = bundles.make("/bin/true")
    bundle.process["terminal"] = True
    bundle.write()
    ctx = Context(root=str(runtime_root))
    before = _fds()
    # Keeping the exception keeps the failed frames alive: sockets must have been closed
    # explicitly, not merely dropped for the garbage collector to close some day.
    with pytest.raises(InvalidArgument, match=r"--console-socket .*: connect") as failed:
        create(
            ctx,
            bundle.id,
            CreateOptions(bundle=str(bundle.path), console_socket=str(bundle.path / "no.sock")),
        )
    # The sync pair, exec.sock and the console socket were open when connect failed.
    assert _fds() == before
    assert ctx.store.ids() == []
    assert failed.traceback  # still referenced up to here
