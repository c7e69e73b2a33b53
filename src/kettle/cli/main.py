"""kctl: Docker's verbs against kettled.  `kctl --address SOCK COMMAND ...`.

Start-up stays cheap: grpc is imported only once a command talks to the daemon."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from kettle.api import DEFAULT_ADDRESS
from kettle.api import kettle_pb as pb
from kettle.errors import KettleError, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.cli.client import Client

Command = Callable[["Client", argparse.Namespace], int]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _container_json(c: pb.Container) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "status": c.status,
        "exit_code": c.exit_code,
        "created_ns": c.created_ns,
        "started_ns": c.started_ns,
        "finished_ns": c.finished_ns,
        "pid": c.pid,
        "command": list(c.command),
        "labels": dict(c.labels),
        "auto_remove": c.auto_remove,
        **({"spec": json.loads(c.spec_json)} if c.spec_json else {}),
    }


def _image_json(i: pb.Image) -> dict[str, Any]:
    return {
        "name": i.name,
        "digest": i.digest,
        "config": i.config,
        "size": i.size,
        "created_ns": i.created_ns,
        "platform": i.platform,
    }


# -- images ------------------------------------------------------------------------------------


def _pull(client: Client, ref: str, quiet: bool = False) -> pb.Image:
    image: pb.Image | None = None
    for ev in client.stream("PullImage", pb.PullImageRequest(reference=ref), pb.PullProgress):
        if ev.image is not None:
            image = ev.image
        elif not quiet and ev.kind in ("exists", "unpacked", "resolved"):
            print(f"{ev.digest[:19]}: {ev.kind}", file=sys.stderr)
    if image is None:
        raise KettleError(f"pull {ref}: kettled ended the pull without an image")
    return image


def cmd_pull(client: Client, a: argparse.Namespace) -> int:
    image = _pull(client, a.image, a.quiet)
    _out(f"{image.name} {image.digest}")
    return 0


def cmd_images(client: Client, a: argparse.Namespace) -> int:
    images = client.call("ListImages", pb.ListImagesRequest(), pb.ListImagesResponse).images
    if a.format == "json":
        _out(json.dumps([_image_json(i) for i in images], indent=2))
    elif a.quiet:
        for i in images:
            _out(i.digest)
    else:
        from kettle.cli.format import ago, size, table

        rows = [[i.name, i.digest[7:19], ago(i.created_ns), size(i.size)] for i in images]
        _out(table(["IMAGE", "DIGEST", "PULLED", "SIZE"], rows))
    return 0


def cmd_rmi(client: Client, a: argparse.Namespace) -> int:
    for ref in a.images:
        client.call("RemoveImage", pb.RemoveImageRequest(reference=ref), pb.Empty)
        _out(f"Untagged: {ref}")
    return 0


# -- containers --------------------------------------------------------------------------------


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _env(items: list[str]) -> list[str]:
    # `-e NAME` takes NAME from kctl's environment, as Docker does.
    out = []
    for item in items:
        if "=" not in item:
            if item not in os.environ:
                continue
            item = f"{item}={os.environ[item]}"
        out.append(item)
    return out


def _create(client: Client, a: argparse.Namespace, auto_remove: bool) -> pb.Container:
    req = pb.CreateContainerRequest(
        image=a.image,
        args=a.command,
        entrypoint=[a.entrypoint] if a.entrypoint else [],
        entrypoint_set=a.entrypoint is not None,
        env=_env(a.env),
        workdir=a.workdir or "",
        user=a.user or "",
        name=a.name or "",
        labels=_labels(a.label),
        hostname=a.hostname or "",
        network=a.network,
        auto_remove=auto_remove,
    )
    try:
        return client.call("CreateContainer", req, pb.Container)
    except NotFound as e:
        if not str(e).startswith("image "):
            raise
    print(f"Unable to find image '{a.image}' locally", file=sys.stderr)
    _pull(client, a.image)
    return client.call("CreateContainer", req, pb.Container)


def cmd_create(client: Client, a: argparse.Namespace) -> int:
    _out(_create(client, a, auto_remove=a.rm).id)
    return 0


def _copy_logs(client: Client, cid: str, follow: bool, tail: int, stamps: bool = False) -> None:
    req = pb.LogsRequest(id=cid, follow=follow, tail=tail)
    for entry in client.stream("Logs", req, pb.LogEntry):
        out = sys.stderr.buffer if entry.stream == "stderr" else sys.stdout.buffer
        if stamps:
            from datetime import UTC, datetime

            when = datetime.fromtimestamp(entry.time_ns / 1e9, UTC).isoformat()
            out.write(when.encode() + b" ")
        out.write(entry.line)
        out.flush()


def cmd_run(client: Client, a: argparse.Namespace) -> int:
    # Foreground --rm is done here once the output has been copied; detached, kettled does it.
    c = _create(client, a, auto_remove=a.rm and a.detach)
    try:
        client.call("StartContainer", pb.ContainerRequest(id=c.id), pb.Container)
    except KettleError:
        if a.rm:
            client.call("RemoveContainer", pb.RemoveContainerRequest(id=c.id, force=True), pb.Empty)
        raise
    if a.detach:
        _out(c.id)
        return 0
    _copy_logs(client, c.id, follow=True, tail=-1)
    code = client.call("Wait", pb.ContainerRequest(id=c.id), pb.WaitResponse).exit_code
    if a.rm:
        client.call("RemoveContainer", pb.RemoveContainerRequest(id=c.id, force=True), pb.Empty)
    return code


def cmd_start(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        client.call("StartContainer", pb.ContainerRequest(id=ref), pb.Container)
        _out(ref)
    return 0


def cmd_ps(client: Client, a: argparse.Namespace) -> int:
    req = pb.ListContainersRequest(all=a.all)
    found = client.call("ListContainers", req, pb.ListContainersResponse).containers
    if a.format == "json":
        _out(json.dumps([_container_json(c) for c in found], indent=2))
    elif a.quiet:
        for c in found:
            _out(c.id[:12])
    else:
        from kettle.cli.format import ago, status, table

        rows = [
            [
                c.id[:12],
                c.image,
                json.dumps(" ".join(c.command)[:30]),
                ago(c.created_ns),
                status(c.status, c.exit_code, c.started_ns, c.finished_ns),
                c.name,
            ]
            for c in found
        ]
        _out(table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"], rows))
    return 0


def cmd_logs(client: Client, a: argparse.Namespace) -> int:
    tail = -1 if a.tail == "all" else int(a.tail)
    _copy_logs(client, a.container, a.follow, tail, a.timestamps)
    return 0


def cmd_stop(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        req = pb.StopContainerRequest(id=ref, timeout=a.time)
        client.call("StopContainer", req, pb.Container)
        _out(ref)
    return 0


def cmd_kill(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        req = pb.KillContainerRequest(id=ref, signal=a.signal)
        client.call("KillContainer", req, pb.Empty)
        _out(ref)
    return 0


def cmd_rm(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        client.call("RemoveContainer", pb.RemoveContainerRequest(id=ref, force=a.force), pb.Empty)
        _out(ref)
    return 0


def cmd_inspect(client: Client, a: argparse.Namespace) -> int:
    found = [
        _container_json(client.call("InspectContainer", pb.ContainerRequest(id=r), pb.Container))
        for r in a.containers
    ]
    _out(json.dumps(found, indent=2))
    return 0


def cmd_wait(client: Client, a: argparse.Namespace) -> int:
    for ref in a.containers:
        _out(str(client.call("Wait", pb.ContainerRequest(id=ref), pb.WaitResponse).exit_code))
    return 0


def cmd_version(client: Client, a: argparse.Namespace) -> int:
    import kettle

    v = client.call("Version", pb.VersionRequest(), pb.VersionResponse)
    if a.format == "json":
        info = {"client": kettle.__version__, "server": v.version, "api": v.api_version}
        _out(json.dumps(info, indent=2))
    else:
        _out(f"Client: {kettle.__version__}\nServer: {v.version} (api {v.api_version})")
    return 0


# -- arguments ---------------------------------------------------------------------------------


def _container_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rm", action="store_true", help="remove the container once it exits")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--hostname")
    p.add_argument("--entrypoint")
    p.add_argument("--network", default="none", choices=("none", "host"))
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kctl", description="Kettle's command line")
    p.add_argument(
        "--address",
        default=os.environ.get("KETTLE_ADDRESS", DEFAULT_ADDRESS),
        help="kettled's socket (default $KETTLE_ADDRESS or %(default)s)",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help_: str, fmt: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(fn=fn)
        if fmt:
            sp.add_argument("--format", choices=("table", "json"), default="table")
        return sp

    sp = add("pull", cmd_pull, "pull an image")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("image")
    sp = add("images", cmd_images, "list images", fmt=True)
    sp.add_argument("-q", "--quiet", action="store_true")
    add("rmi", cmd_rmi, "remove images").add_argument("images", nargs="+")
    sp = add("run", cmd_run, "create and start a container")
    sp.add_argument("-d", "--detach", action="store_true")
    _container_flags(sp)
    _container_flags(add("create", cmd_create, "create a container"))
    add("start", cmd_start, "start containers").add_argument("containers", nargs="+")
    sp = add("ps", cmd_ps, "list containers", fmt=True)
    sp.add_argument("-a", "--all", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp = add("logs", cmd_logs, "show a container's output")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.add_argument("-t", "--timestamps", action="store_true")
    sp.add_argument("-n", "--tail", default="all")
    sp.add_argument("container")
    sp = add("stop", cmd_stop, "stop containers (SIGTERM, then SIGKILL)")
    sp.add_argument("-t", "--time", type=int, default=-1, help="seconds before SIGKILL")
    sp.add_argument("containers", nargs="+")
    sp = add("kill", cmd_kill, "signal containers")
    sp.add_argument("-s", "--signal", default="KILL")
    sp.add_argument("containers", nargs="+")
    sp = add("rm", cmd_rm, "remove containers")
    sp.add_argument("-f", "--force", action="store_true")
    sp.add_argument("containers", nargs="+")
    add("inspect", cmd_inspect, "containers as JSON").add_argument("containers", nargs="+")
    add("wait", cmd_wait, "wait for containers to exit").add_argument("containers", nargs="+")
    add("version", cmd_version, "client and server versions", fmt=True)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if a.cmd == "logs" and a.tail != "all" and not a.tail.lstrip("-").isdigit():
        print(f"kctl: --tail {a.tail!r}: a number or all", file=sys.stderr)
        return 2
    from kettle.cli.client import Client

    client = Client(a.address)
    try:
        code: int = a.fn(client, a)
        return code
    except KettleError as e:
        print(f"kctl: {e}", file=sys.stderr)
        return 125 if a.cmd == "run" else 1
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
