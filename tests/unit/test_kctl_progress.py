"""kctl's pull progress and image listing logic, and kettled's progress throttle (no daemon)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from kettle.api import kettle_pb as pb
from kettle.cli import pulling
from kettle.cli.commands import image as image_cmd
from kettle.cli.commands import images as images_cmd
from kettle.cli.commands import rmi as rmi_cmd
from kettle.daemon.services.images import Throttle, rfc3339_ns
from kettle.errors import KettleError

L1 = "sha256:" + "a1" * 32
L2 = "sha256:" + "b2" * 32
TARGET = "sha256:" + "cc" * 32
CONFIG = "sha256:" + "dd" * 32


def ev(kind: str, digest: str = "", done: int = 0, total: int = 0) -> pb.PullProgress:
    return pb.PullProgress(kind=kind, digest=digest, done=done, total=total)


def final(name: str = "example.com/app:1") -> pb.PullProgress:
    image = pb.Image(name=name, digest=TARGET, config=CONFIG, size=10)
    return pb.PullProgress(kind="done", digest=TARGET, image=image)


class FakeClient:
    def __init__(self, events: list[pb.PullProgress]) -> None:
        self.events = events
        self.calls: list[tuple[str, Any]] = []

    def stream(self, name: str, req: Any, _resp: type) -> Iterator[pb.PullProgress]:
        self.calls.append((name, req))
        yield from self.events


class TtyText(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- pieces ---------------------------------------------------------------------------------


def test_bar_fills_in_proportion() -> None:
    assert pulling.bar(0, 100, 10) == "[>         ]"
    assert pulling.bar(50, 100, 10) == "[=====>    ]"
    assert pulling.bar(100, 100, 10) == "[==========]"
    assert pulling.bar(5, 0, 4) == "[    ]"  # size unknown: an empty bar, no division by zero


def test_layer_line_shows_state_bar_and_bytes() -> None:
    layer = pulling.Layer(L1, "downloading", 1_500_000, 3_000_000)
    assert layer.line() == f"a1a1a1a1a1a1: Downloading {pulling.bar(1, 2)} 1.5MB/3MB"
    assert layer.plain() == "a1a1a1a1a1a1: Downloading 3MB"
    assert pulling.Layer(L1, "complete", 5, 5).line() == "a1a1a1a1a1a1: Pull complete"
    assert pulling.Layer(L1, "exists", 5, 5).line() == "a1a1a1a1a1a1: Already exists"


def test_view_tracks_layers_in_order_and_reports_state_changes() -> None:
    view = pulling.PullView("example.com/app:1")
    assert not view.update(ev("resolved", TARGET))
    assert view.update(ev("exists", L2, 7, 7))
    assert view.update(ev("waiting", L1, 0, 100))
    assert view.update(ev("downloading", L1, 10, 100))
    assert not view.update(ev("downloading", L1, 60, 100))  # bytes only: same state
    assert view.layers[L1].done == 60
    assert view.update(ev("verifying", L1, 100, 100))
    assert view.update(ev("complete", L1, 100, 100))
    assert not view.update(ev("some-future-kind", L1))
    assert [x.split(":")[0] for x in view.lines()] == ["b2b2b2b2b2b2", "a1a1a1a1a1a1"]
    view.update(final())
    assert view.summary() == [
        f"Digest: {TARGET}",
        "Status: Downloaded newer image for example.com/app:1",
    ]


def test_view_says_up_to_date_when_nothing_was_fetched() -> None:
    view = pulling.PullView("x")
    view.update(ev("exists", L1, 1, 1))
    view.update(final())
    assert view.summary()[1] == "Status: Image is up to date for example.com/app:1"


# --- whole pulls --------------------------------------------------------------------------


EVENTS = [
    ev("resolved", TARGET),
    ev("waiting", L1, 0, 2000),
    ev("downloading", L1, 500, 2000),
    ev("downloading", L1, 1000, 2000),
    ev("downloading", L1, 2000, 2000),
    ev("verifying", L1, 2000, 2000),
    ev("unpacking", L1, 0, 2000),
    ev("complete", L1, 2000, 2000),
    final(),
]


def test_plain_output_is_one_line_per_state() -> None:
    err = io.StringIO()
    image = pulling.pull(FakeClient(EVENTS), "example.com/app:1", err=err, tty=False)  # type: ignore[arg-type]
    assert image.name == "example.com/app:1"
    assert err.getvalue().splitlines() == [
        "Pulling example.com/app:1",
        "a1a1a1a1a1a1: Waiting",
        "a1a1a1a1a1a1: Downloading 2kB",
        "a1a1a1a1a1a1: Verifying",
        "a1a1a1a1a1a1: Unpacking",
        "a1a1a1a1a1a1: Pull complete",
        f"Digest: {TARGET}",
        "Status: Downloaded newer image for example.com/app:1",
    ]


def test_quiet_prints_nothing() -> None:
    err = io.StringIO()
    pulling.pull(FakeClient(EVENTS), "example.com/app:1", quiet=True, err=err, tty=True)  # type: ignore[arg-type]
    assert err.getvalue() == ""


def test_terminal_redraws_in_place() -> None:
    err = TtyText()
    pulling.pull(FakeClient(EVENTS), "example.com/app:1", err=err)  # type: ignore[arg-type]
    text = err.getvalue()
    # Every redraw after the first goes back up over the one layer line and erases it.
    assert "\x1b[1F" in text and "\x1b[2K" in text
    screens = text.split("\x1b[1F")
    assert "Pull complete" in screens[-1] and "Downloading" not in screens[-1]
    assert (
        text.rstrip("\n").splitlines()[-1] == "Status: Downloaded newer image for example.com/app:1"
    )


def test_terminal_draw_is_throttled_but_state_changes_pass() -> None:
    now = [0.0]
    err = io.StringIO()
    screen = pulling.TerminalDraw(err, 80, clock=lambda: now[0])
    view = pulling.PullView("x")
    view.update(ev("downloading", L1, 1, 100))
    screen.draw(view)
    first = err.getvalue()
    view.update(ev("downloading", L1, 2, 100))
    screen.draw(view)  # too soon: nothing drawn
    assert err.getvalue() == first
    screen.draw(view, force=True)  # a state change draws at once
    assert err.getvalue() != first
    now[0] = 1.0
    before = err.getvalue()
    screen.draw(view)
    assert err.getvalue() != before


def test_terminal_lines_fit_the_width() -> None:
    err = io.StringIO()
    screen = pulling.TerminalDraw(err, 30)
    view = pulling.PullView("x")
    view.update(ev("downloading", L1, 1, 100))
    screen.draw(view, force=True)
    assert all(len(line.replace("\x1b[2K", "")) <= 29 for line in err.getvalue().splitlines())


def test_a_stream_without_an_image_is_an_error() -> None:
    with pytest.raises(KettleError, match="without an image"):
        pulling.pull(FakeClient(EVENTS[:-1]), "x", err=io.StringIO(), tty=False)  # type: ignore[arg-type]


# --- kettled's throttle ---------------------------------------------------------------------


def test_throttle_drops_byte_counts_that_come_too_soon() -> None:
    t = Throttle(0.1)
    assert t.passes("downloading", L1, 1, 100, 0.0)
    assert not t.passes("downloading", L1, 2, 100, 0.05)
    assert t.passes("downloading", L2, 2, 100, 0.05)  # per layer
    assert t.passes("downloading", L1, 100, 100, 0.06)  # the last count always goes
    assert t.passes("verifying", L1, 100, 100, 0.07)  # so does every state
    assert t.passes("downloading", L1, 3, 100, 0.2)


def test_rfc3339_created() -> None:
    assert rfc3339_ns("1970-01-01T00:00:01Z") == 1_000_000_000
    assert rfc3339_ns("2023-05-19T20:19:39.487424386Z") == 1684527579_487424386
    assert rfc3339_ns("2023-05-19T22:19:39.5+02:00") == 1684527579_500000000
    assert rfc3339_ns("") == 0 and rfc3339_ns("yesterday") == 0
    assert rfc3339_ns("2023-05-19T20:19:39") == 0  # no zone: not a time we can place


# --- listing ----------------------------------------------------------------------------------


def test_split_name_like_docker() -> None:
    assert images_cmd.split_name("docker.io/library/busybox:latest") == ("busybox", "latest", "")
    assert images_cmd.split_name("docker.io/me/app:1") == ("me/app", "1", "")
    assert images_cmd.split_name("localhost:5000/a/b:v") == ("localhost:5000/a/b", "v", "")
    assert images_cmd.split_name(f"localhost:5000/a@{TARGET}") == (
        "localhost:5000/a",
        "<none>",
        TARGET,
    )


def _img(name: str, config: str, created: int = 0) -> pb.Image:
    return pb.Image(name=name, digest=TARGET, config=config, created_ns=created)


def test_rows_hide_digest_names_of_tagged_images_unless_all() -> None:
    other = "sha256:" + "ee" * 32
    imgs = [
        _img("r.io/a:1", CONFIG, 2),
        _img(f"r.io/a@{TARGET}", CONFIG, 2),
        _img(f"r.io/a@sha256:{'f' * 64}", other, 1),  # dangling: shown
    ]
    shown = [(repo, tag) for _, repo, tag, _ in images_cmd.rows(imgs, False)]
    assert shown == [("r.io/a", "1"), ("r.io/a", "<none>")]
    assert len(images_cmd.rows(imgs, True)) == 3


def test_inspect_json_has_docker_fields() -> None:
    cfg = {"created": "2020-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
           "config": {"Env": ["A=1"]}, "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip
    detail = pb.ImageDetail(
        image=_img("r.io/a:1", CONFIG),
        config_json=json.dumps(cfg),
        manifest_json='{"schemaVersion": 2}',
        tags=["r.io/a:1", "r.io/b:2", f"r.io/a@{TARGET}"],
    )
    doc = image_cmd.inspect_json(detail)
    assert doc["Id"] == CONFIG
    assert doc["RepoTags"] == ["r.io/a:1", "r.io/b:2"]
    assert doc["RepoDigests"] == [f"r.io/a@{TARGET}", f"r.io/b@{TARGET}"]
    assert doc["Config"] == {"Env": ["A=1"]} and doc["Manifest"] == {"schemaVersion": 2}


def test_rmi_force_of_an_id_names_each_name() -> None:
    names = {CONFIG: ["r.io/a:1", "r.io/b:2"]}
    if rmi_cmd.HAS_FORCE:
        pytest.skip("kettled takes force itself")
    assert rmi_cmd.targets("dddddddd", True, names) == ["r.io/a:1", "r.io/b:2"]
    assert rmi_cmd.targets("dddddddd", False, names) == ["dddddddd"]
    assert rmi_cmd.targets("r.io/a:1", True, names) == ["r.io/a:1"]


def test_terminal_shows_no_more_layers_than_fit_on_the_screen() -> None:
    err = io.StringIO()
    screen = pulling.TerminalDraw(err, 80, height=4)
    view = pulling.PullView("x")
    for i in range(6):
        view.update(ev("waiting", f"sha256:{i}" + "0" * 63, 0, 10))
    screen.draw(view, force=True)
    drawn = [line.removeprefix("\x1b[2K") for line in err.getvalue().splitlines()]
    assert drawn == view.lines()[-3:] and drawn[0].startswith("300000000000: ")
    screen.draw(view, force=True)
    assert "\x1b[3F" in err.getvalue()
