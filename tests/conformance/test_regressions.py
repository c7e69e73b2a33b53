"""Regressions the validation suite found, pinned without needing the suite's sources."""

from __future__ import annotations

import pytest

from tests.support.containers import Containers


@pytest.mark.privileged
def test_seccomp_profile_without_close_range_still_starts(containers: Containers) -> None:
    # runtime-tools' default seccomp profile predates close_range(2), so it returns EPERM for it;
    # the runtime must not need that syscall once the filter is loaded (every validation program
    # failed `start` with "close_range: operation not permitted").
    bundle = containers.bundle("/bin/sh", "-c", "echo started")
    bundle.linux["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO"}],
    }
    result = containers.run(bundle)
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout
