"""Root conftest: markers, the "needs root" skip logic, and the fixtures every tier shares.

The runtime under test is a parameter: KETTLE_TEST_RUNTIME names its binary (default: the
kettle-runtime next to the interpreter running pytest).  Integration and peer tests use only the
runc command-line contract, so `KETTLE_TEST_RUNTIME=/usr/sbin/runc pytest tests/integration`
validates the tests themselves; tests about kettle's own behaviour are marked `kettle_only`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `tests.support` importable however pytest is started (the console script does not put
# the repository root on sys.path).
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.support import reaper  # noqa: E402
from tests.support.bundle import BundleFactory, build_probe, build_rootfs  # noqa: E402
from tests.support.containers import Containers  # noqa: E402
from tests.support.runtime import Runtime, runtime_under_test  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36

MARKERS = {
    "privileged": "needs root and real kernel features (namespaces, mounts, cgroups)",
    "peers": "drives a real peer program (containerd, podman, runc, crun)",
    "needs_root": "skipped unless running as root",
    "kettle_only": "tests kettle-runtime's own behaviour; skipped for other runtimes",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    # Container inits outlive the `create` that started them; as a subreaper this process
    # inherits them (PID 1 on these machines never reaps) and the fixtures reap them.
    try:
        from kettle.syscalls import prctl

        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except Exception as exc:  # the suite must still collect if kettle is broken
        sys.stderr.write(f"conftest: could not become a child subreaper: {exc}\n")
    reaper.start()


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.hookimpl(tryfirst=True)  # before fixtures are set up: no probe build when skipping
def pytest_runtest_setup(item: pytest.Item) -> None:
    needs_root = any(item.iter_markers(name=n) for n in ("privileged", "peers", "needs_root"))
    if needs_root and not is_root():
        pytest.skip("needs root")
    if any(item.iter_markers(name="kettle_only")) and "kettle" not in runtime_under_test().name:
        pytest.skip(f"kettle-specific; runtime under test is {runtime_under_test()}")


@pytest.fixture(scope="session")
def container_reaper() -> reaper.Reaper:
    """The thread reaping container processes; `with container_reaper.paused():` stops it."""
    return reaper.start()


@pytest.fixture(scope="session")
def runtime_binary() -> Path:
    binary = runtime_under_test()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.skip(f"runtime under test {binary} is not an executable file")
    return binary


@pytest.fixture(scope="session")
def runtime_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private state directory (--root) so tests never see other users' containers."""
    return tmp_path_factory.mktemp("runtime-root")


@pytest.fixture(scope="session")
def runtime(runtime_binary: Path, runtime_root: Path) -> Runtime:
    return Runtime(runtime_binary, runtime_root)


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_probe(tmp_path_factory.mktemp("probe") / "probe")


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory, probe_binary: Path) -> Path:
    rootfs = build_rootfs(tmp_path_factory.mktemp("template") / "rootfs", probe_binary)
    rootfs.chmod(0o755)
    return rootfs


@pytest.fixture
def bundles(rootfs_template: Path) -> Iterator[BundleFactory]:
    # Not under tmp_path: /tmp/pytest-of-root is 0700, and a container whose root is mapped to
    # another uid (user namespaces, rootless) must be able to reach its rootfs.
    base = Path(tempfile.mkdtemp(prefix="kettle-bundles-"))
    base.chmod(0o711)
    try:
        yield BundleFactory(base, rootfs_template)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def containers(runtime: Runtime, bundles: BundleFactory) -> Iterator[Containers]:
    """Bundles and containers for one test; all force-deleted and checked for leaks after."""
    tracker = Containers(runtime, bundles)
    yield tracker
    problems = tracker.cleanup()
    if problems:
        pytest.fail("container resources leaked:\n" + "\n".join(problems))
