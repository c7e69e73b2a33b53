"""Builds the runtime-tools validation suite once per session (see suite.py for where from).

The build lands in .tmp/conformance/ (git-ignored), keyed by a digest of the sources and the Go
toolchain, so a second session reuses it.  Every test skips, with the reason, when go or the
sources are missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conformance import suite as rt

CACHE_ENV = "KETTLE_CONFORMANCE_CACHE"


@pytest.fixture(scope="session")
def validation_suite() -> rt.Suite:
    if os.geteuid() != 0:
        pytest.skip("the validation programs create containers: needs root")
    sources, why = rt.find_sources()
    if sources is None:
        pytest.skip(why)
    if rt.go_binary() is None:
        pytest.skip("go is not installed (Debian package golang-go)")
    cache = Path(os.environ.get(CACHE_ENV) or rt.DEFAULT_CACHE)
    try:
        return rt.build(cache)
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.fail(f"cannot build the runtime-tools validation suite: {exc}")
