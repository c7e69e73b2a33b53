"""kctl run [flags] IMAGE [COMMAND...]"""

from __future__ import annotations

import argparse
import os
import sys

from kettle.api import kettle_pb as pb
from kettle.cli import runflags
from kettle.cli.commands.create import create
from kettle.cli.commands.logs import copy_logs
from kettle.cli.common import out
from kettle.errors import FailedPrecondition, InvalidArgument, KettleError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

HELP = "create and start a container"
#: what --sig-proxy forwards to a foreground container without a tty (Docker proxies every
#: signal it may catch; these are the ones a user sends to a foreground command).
_PROXIED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--detach-keys", default="", help="keys that detach (default ctrl-p,ctrl-q)")
    p.add_argument(
        "--sig-proxy",
        default="true",
        choices=("true", "false"),
        help="forward the signals kctl receives to the container (not with -t)",
    )
    runflags.add_flags(p)
    add_replicas(p)


def add_replicas(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="N identical containers NAME-1..NAME-N as one group (needs --name; detached)",
    )


def run_group(client: Client, a: argparse.Namespace, start: bool) -> int:
    """`--replicas N`: a group made (or scaled) by kettled; each member supervised alone."""
    if not a.name:
        raise InvalidArgument("--replicas: a group needs --name")
    if a.replicas < 1:
        raise InvalidArgument(f"--replicas {a.replicas}: at least 1")
    if a.rm or a.interactive or a.tty:
        raise InvalidArgument("--replicas: not with --rm, -i or -t (members run detached)")
    template = runflags.request(a, auto_remove=False)
    template.name = ""
    req = pb.ScaleRequest(name=a.name, replicas=a.replicas, template=template, start=start)
    try:
        group = client.call("ScaleGroup", req, pb.Group)
    except KettleError as e:
        if not str(e).startswith("image "):
            raise
        from kettle.cli.pulling import pull

        print(f"Unable to find image '{template.image}' locally", file=sys.stderr)
        pull(client, template.image)
        group = client.call("ScaleGroup", req, pb.Group)
    for member in group.members:
        out(member)
    return 0


class _CommandFailed(FailedPrecondition):
    """The container's command could not be run: Docker's 126/127 rather than 125."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _command_exit_code(e: KettleError) -> int | None:
    """Docker's status for a command that could not be run (the runtime's `exec: ...` words):
    127 not found, 126 found but not runnable; None for any other failure to start."""
    text = str(e).lower()
    if "exec:" not in text and "executable file not found" not in text:
        return None
    if "permission denied" not in text and ("not found" in text or "no such file" in text):
        return 127
    return 126


def run(client: Client, a: argparse.Namespace) -> int:
    try:
        return _run(client, a)
    except _CommandFailed as e:
        sys.stderr.write(f"kctl: {e}\n")
        return e.exit_code


def _run(client: Client, a: argparse.Namespace) -> int:
    if a.replicas is not None:
        return run_group(client, a, start=True)
    if a.detach:
        c = create(client, runflags.request(a, auto_remove=a.rm))
        _start(client, c.id, remove=a.rm)
        out(c.id)
        return 0
    if a.interactive or a.tty:
        return _run_attached(client, a)
    # Foreground --rm is done here once the output has been copied.
    c = create(client, runflags.request(a, auto_remove=False))
    _start(client, c.id, remove=a.rm)
    with SignalProxy(client, c.id, a.sig_proxy == "true"):
        copy_logs(client, c.id, follow=True, tail=-1)
        code = client.call("Wait", pb.ContainerRequest(id=c.id), pb.WaitResponse).exit_code
    if a.rm:
        client.call("RemoveContainer", pb.RemoveContainerRequest(id=c.id, force=True), pb.Empty)
    return code


def _start(client: Client, cid: str, remove: bool) -> None:
    try:
        client.call("StartContainer", pb.ContainerRequest(id=cid), pb.Container)
    except KettleError as e:
        if remove:
            client.call("RemoveContainer", pb.RemoveContainerRequest(id=cid, force=True), pb.Empty)
        code = _command_exit_code(e)
        if code is not None:
            raise _CommandFailed(str(e), code) from None
        raise


def _run_attached(client: Client, a: argparse.Namespace) -> int:
    """-i and/or -t: attach first, then start, so that no output is lost.  --rm is kettled's
    (auto-remove), so that a container left running by the detach keys goes once it exits."""
    from kettle.cli import terminal

    keys = terminal.parse_detach_keys(a.detach_keys)
    if a.tty and a.interactive and not os.isatty(sys.stdin.fileno()):
        raise InvalidArgument("the input device is not a tty (drop -t, or run from a terminal)")
    c = create(client, runflags.request(a, auto_remove=a.rm))
    stream = client.bidi("Attach", pb.IOInput(attach_id=c.id), pb.IOOutput)
    # Docker's `run -i` closes the container's stdin at the end of its own (stdin_once).
    session = terminal.Session(
        stream, stdin=a.interactive, tty=a.tty, detach_keys=keys, close_at_eof=True
    )
    try:
        if session.first() is None:
            raise InvalidArgument(f"container {c.id}: attach ended before it started")
        _start(client, c.id, remove=False)
    except KettleError:
        stream.cancel()
        if a.rm:  # it never ran, so kettled's auto-remove never comes
            client.call("RemoveContainer", pb.RemoveContainerRequest(id=c.id, force=True), pb.Empty)
        raise
    with SignalProxy(client, c.id, a.sig_proxy == "true" and not a.tty):
        last = session.interact()
    return session.finish(last)


class SignalProxy:
    """While active, the signals in _PROXIED go to the container (KillContainer) instead of
    acting on kctl, as `docker run --sig-proxy` does.  Handlers only queue the signal: the
    call to kettled is made from a thread of its own, never inside a handler."""

    def __init__(self, client: Client, cid: str, enabled: bool) -> None:
        self.client = client
        self.cid = cid
        self.enabled = enabled
        self._old: dict[int, object] = {}

    def __enter__(self) -> SignalProxy:
        if not self.enabled:
            return self
        import queue
        import signal
        import threading

        pending: queue.Queue[int] = queue.Queue()
        self._queue = pending
        for name in _PROXIED:
            num = int(signal.Signals[name])
            self._old[num] = signal.signal(num, lambda n, _f: pending.put(n))
        threading.Thread(target=self._forward, name="sig-proxy", daemon=True).start()
        return self

    def _forward(self) -> None:
        while True:
            num = self._queue.get()
            if num < 0:
                return
            req = pb.KillContainerRequest(id=self.cid, signal=str(num))
            try:
                self.client.call("KillContainer", req, pb.Empty)
            except KettleError as e:
                # Most often: it has exited already.  kctl goes on waiting for its end.
                sys.stderr.write(f"kctl: forwarding signal {num}: {e}\n")

    def __exit__(self, *_exc: object) -> None:
        if not self.enabled:
            return
        import signal

        for num, old in self._old.items():
            signal.signal(num, old)  # type: ignore[arg-type]  # what signal() gave back
        self._queue.put(-1)
