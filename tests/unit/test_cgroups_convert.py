"""Value translations (v1 units -> v2 files) and cgroupsPath resolution."""

from __future__ import annotations

import pytest

from kettle.cgroups import convert, paths
from kettle.errors import InvalidArgument


@pytest.mark.parametrize(
    ("shares", "weight"),
    [
        (0, 0),  # not set
        (1, 1),  # below the v1 minimum: clamped rather than 0
        (2, 1),
        (3, 1),
        (100, 4),
        (512, 20),
        (1024, 39),  # the v1 default maps to runc/crun's 39, not 100
        (2048, 79),
        (10000, 382),
        (262144, 10000),
    ],
)
def test_shares_to_weight_matches_runc_and_crun(shares: int, weight: int) -> None:
    assert convert.shares_to_weight(shares) == weight


@pytest.mark.parametrize(("blkio", "io"), [(0, 0), (10, 1), (100, 910), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight(blkio: int, io: int) -> None:
    assert convert.blkio_weight_to_io_weight(blkio) == io


@pytest.mark.parametrize(
    ("quota", "period", "line"),
    [
        (None, None, None),
        (0, 0, None),
        (50000, None, "50000"),
        (50000, 100000, "50000 100000"),
        (-1, 100000, "max 100000"),
        (-1, None, "max"),
        (None, 250000, "max 250000"),
    ],
)
def test_cpu_max_line(quota: int | None, period: int | None, line: str | None) -> None:
    assert convert.cpu_max(quota, period) == line


@pytest.mark.parametrize(("limit", "text"), [(-1, "max"), (0, "max"), (1, "1"), (4096, "4096")])
def test_pids_max(limit: int, text: str) -> None:
    assert convert.pids_max(limit) == text


@pytest.mark.parametrize(
    ("swap", "limit", "out"),
    [
        (None, None, None),
        (0, 1000, None),  # swap unset: leave memory.swap.max
        (-1, 1000, -1),
        (None, -1, -1),  # unlimited memory lifts the swap limit too
        (3000, 1000, 2000),  # OCI swap is memory+swap; v2 wants swap alone
        (1000, 1000, 0),
    ],
)
def test_swap_v2(swap: int | None, limit: int | None, out: int | None) -> None:
    assert convert.swap_v2(swap, limit, "f") == out


@pytest.mark.parametrize(("swap", "limit"), [(500, 1000), (3000, None), (3000, -1)])
def test_swap_v2_refuses_impossible_pairs(swap: int, limit: int | None) -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.memory\.swap"):
        convert.swap_v2(swap, limit, "linux.resources.memory.swap")


def test_memory_max() -> None:
    assert convert.memory_max(-1) == "max"
    assert convert.memory_max(1 << 20) == "1048576"


@pytest.mark.parametrize(
    "bad", ["2M", "2mb", "", "MB", 2, "2 MB", "-2MB", "2MBB", "2MB\n", "\u00b2MB", "2.5MB"]
)
def test_hugepage_size_validation(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="pageSize"):
        convert.hugepage_size(bad, "hugepageLimits[0].pageSize")


@pytest.mark.parametrize("good", ["64KB", "2MB", "1GB", "16GB", "1TB", "1PB"])
def test_hugepage_size_accepts_digits_and_a_unit(good: str) -> None:
    assert convert.hugepage_size(good, "x") == good


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("/a/b", "/a/b"),
        ("/a/../../b", "/b"),
        ("//a//b/", "/a/b"),
        ("a/b", "a/b"),
        ("../../x", "x"),  # a relative path never climbs above the runtime's cgroup
        ("a/../../b", "b"),
        ("", ""),
    ],
)
def test_clean_path(raw: str, clean: str) -> None:
    assert paths.clean_path(raw) == clean


def test_resolve_defaults_to_the_id_relative() -> None:
    assert paths.resolve(None, "abc") == "abc"
    assert paths.resolve("", "abc") == "abc"
    assert paths.resolve("/kettle/abc", "abc") == "/kettle/abc"
    with pytest.raises(InvalidArgument, match="cgroupsPath"):
        paths.resolve("/..", "abc")
    with pytest.raises(InvalidArgument, match="container id"):
        paths.resolve(None, "a/b")


def test_parse_systemd() -> None:
    assert paths.parse_systemd("system.slice:docker:1", "x") == ("system.slice", "docker", "1")
    assert paths.parse_systemd(None, "x") == ("system.slice", "runc", "x")
    with pytest.raises(InvalidArgument, match="slice:prefix:name"):
        paths.parse_systemd("/a/b", "x")
