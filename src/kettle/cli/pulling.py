"""Pulling through kettled, with progress on stderr: one line per layer, as Docker shows it.

On a terminal the lines are redrawn in place (plain ANSI: cursor up, erase line), each with a
bar and the bytes so far; otherwise every state change of a layer is one line, so a log or a
pipe gets a short, readable record.  The state lives in `PullView`, which draws nothing itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from kettle.api import kettle_pb as pb
from kettle.errors import KettleError

if TYPE_CHECKING:
    from kettle.cli.client import Client

#: PullProgress kind -> what a layer's line says.
STATES = {
    "waiting": "Waiting",
    "downloading": "Downloading",
    "verifying": "Verifying",
    "unpacking": "Unpacking",
    "complete": "Pull complete",
    "exists": "Already exists",
}
BAR_WIDTH = 30
#: a terminal is redrawn at most this often, except when a layer changes state.
REDRAW_INTERVAL = 0.1


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"  # not reached


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[=====>      ]``: the share of `total` that is `done`."""
    if total <= 0:
        return "[" + " " * width + "]"
    filled = min(width, done * width // total)
    if filled >= width:
        return "[" + "=" * width + "]"
    return "[" + "=" * filled + ">" + " " * (width - filled - 1) + "]"


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class Layer:
    """One layer's progress (a plain class: dataclasses imports inspect, ~8 ms)."""

    __slots__ = ("digest", "done", "state", "total")

    def __init__(self, digest: str, state: str, done: int = 0, total: int = 0) -> None:
        self.digest = digest
        self.state = state
        self.done = done
        self.total = total

    def line(self) -> str:
        text = f"{short_id(self.digest)}: {STATES.get(self.state, self.state)}"
        if self.state == "downloading" and self.total:
            text += f" {bar(self.done, self.total)} {size(self.done)}/{size(self.total)}"
        return text

    def plain(self) -> str:
        """The one line a state change gets when not on a terminal."""
        text = f"{short_id(self.digest)}: {STATES.get(self.state, self.state)}"
        if self.state == "downloading" and self.total:
            text += f" {size(self.total)}"
        return text


class PullView:
    """What a pull looks like so far: its layers in the order first heard of."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.layers: dict[str, Layer] = {}
        self.target = ""
        self.image: pb.Image | None = None
        #: a layer was fetched (not all of them were already there).
        self.fetched = False

    def update(self, ev: pb.PullProgress) -> bool:
        """Take one event; whether it changed what a layer's line says its state is."""
        if ev.image is not None:
            self.image = ev.image
            self.target = ev.digest
            return False
        if ev.kind == "resolved":
            self.target = ev.digest
            return False
        if ev.kind not in STATES:
            return False  # a kind a newer kettled sends: nothing to show
        layer = self.layers.get(ev.digest)
        if layer is None:
            layer = self.layers[ev.digest] = Layer(ev.digest, ev.kind)
            changed = True
        else:
            changed = layer.state != ev.kind
            layer.state = ev.kind
        if ev.total:
            layer.total = ev.total
        if ev.kind == "downloading":
            layer.done = ev.done
        if ev.kind in ("downloading", "verifying", "unpacking"):
            self.fetched = True
        return changed

    def lines(self) -> list[str]:
        return [layer.line() for layer in self.layers.values()]

    def summary(self) -> list[str]:
        name = self.image.name if self.image is not None else self.ref
        status = "Downloaded newer image for" if self.fetched else "Image is up to date for"
        return [f"Digest: {self.target}", f"Status: {status} {name}"]


class TerminalDraw:
    """Redraws the view's lines in place on a terminal."""

    def __init__(
        self,
        err: TextIO,
        width: int,
        height: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.err = err
        self.width = max(20, width - 1)  # a full-width line would wrap on some terminals
        # The cursor cannot go up past the top of the screen: show the newest layers only.
        self.height = max(2, height - 1)
        self.clock = clock
        self.drawn = 0
        self.last = -1e9

    def draw(self, view: PullView, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last < REDRAW_INTERVAL:
            return
        self.last = now
        out = [f"\x1b[{self.drawn}F"] if self.drawn else []
        lines = view.lines()[-self.height :]
        for text in lines:
            out.append("\x1b[2K" + text[: self.width] + "\n")
        self.drawn = len(lines)
        self.err.write("".join(out))
        self.err.flush()


def pull(
    client: Client,
    ref: str,
    quiet: bool = False,
    err: TextIO | None = None,
    tty: bool | None = None,
) -> pb.Image:
    """Pull through kettled, showing progress on stderr (nothing when quiet)."""
    err = err if err is not None else sys.stderr
    if tty is None:
        tty = err.isatty()
    view = PullView(ref)
    screen: TerminalDraw | None = None
    if not quiet and tty:
        import shutil

        columns, rows = shutil.get_terminal_size()
        screen = TerminalDraw(err, columns, rows)
    stream = client.stream("PullImage", pb.PullImageRequest(reference=ref), pb.PullProgress)
    try:
        for ev in stream:
            changed = view.update(ev)
            if quiet:
                continue
            if ev.kind == "resolved":
                # Only now: a pull refused up front (bad name, registry down) stays one line.
                err.write(f"Pulling {ref}\n")
                err.flush()
            elif screen is not None:
                screen.draw(view, force=changed)
            elif changed:
                err.write(view.layers[ev.digest].plain() + "\n")
                err.flush()
    finally:
        if screen is not None:
            screen.draw(view, force=True)  # the last state, also when the pull failed
    if view.image is None:
        raise KettleError(f"pull {ref}: kettled ended the pull without an image")
    if not quiet:
        err.write("\n".join(view.summary()) + "\n")
        err.flush()
    return view.image
