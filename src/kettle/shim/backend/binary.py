"""Any runc-compatible binary (kettle-runtime, runc, crun), driven as containerd's runc shim
drives it through go-runc: the same global flags, subcommands and error handling.

    B --root R --log <bundle>/log.json --log-format json [--systemd-cgroup] create
      --bundle <bundle> --pid-file <bundle>/init.pid [--console-socket S] [--no-pivot]
      [--no-new-keyring] <id>

Errors come from the last ``"level":"error"`` line the runtime wrote to log.json during the
call (its stderr when there is none).
"""

from __future__ import annotations

import json
import os
import tempfile

from kettle.errors import FailedPrecondition, Internal, KettleError, NotFound
from kettle.shim import spawn
from kettle.shim.reaper import Reaper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kettle.shim.config import ShimConfig

_GONE = ("does not exist", "not running", "no such process", "process already finished")


def runtime_error(verb: str, container_id: str, message: str) -> KettleError:
    """The error class containerd expects for what the runtime said."""
    text = f"{verb} {container_id}: {message}" if message else f"{verb} {container_id} failed"
    if "does not exist" in message:
        return NotFound(text)
    if any(word in message for word in _GONE):
        return FailedPrecondition(text)
    return KettleError(text)


def last_error(log_text: str) -> str:
    """The msg of the last JSON line with level error (go-runc's rule)."""
    found = ""
    for line in log_text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "error":
            found = str(entry.get("msg", ""))
    return found


class BinaryBackend:
    def __init__(self, cfg: ShimConfig, root: str, reaper: Reaper, bundle: str) -> None:
        self.cfg = cfg
        self.binary = spawn.which(cfg.binary_name)
        self.root = root
        self.reaper = reaper
        self.bundle = bundle
        self.log_path = os.path.join(bundle, "log.json")

    def _argv(self, *args: str) -> list[str]:
        argv = [self.binary, "--root", self.root, "--log", self.log_path, "--log-format", "json"]
        if self.cfg.systemd_cgroup:
            argv.append("--systemd-cgroup")
        argv.extend(args)
        return argv

    def _log_offset(self) -> int:
        try:
            return os.stat(self.log_path).st_size
        except FileNotFoundError:
            return 0

    def _fail(self, verb: str, container_id: str, offset: int, stderr: bytes) -> KettleError:
        message = ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                message = last_error(f.read().decode(errors="replace"))
        except FileNotFoundError:
            pass  # the runtime failed before opening its log: stderr says why
        if not message:
            message = stderr.decode(errors="replace").strip()
        return runtime_error(verb, container_id, message)

    def _run(
        self,
        verb: str,
        container_id: str,
        args: list[str],
        *,
        input: bytes | None = None,
        stdio: list[int | None] | None = None,
    ) -> spawn.Result:
        offset = self._log_offset()
        null = -1
        fds: list[int | None] = [None, None, None]
        if stdio is not None:
            # The process inherits these: never a capture pipe (we would wait for its EOF).
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            fds = [null if fd is None else fd for fd in stdio]
        try:
            result = spawn.run(
                self.reaper,
                self._argv(*args),
                input=input,
                stdin=fds[0],
                stdout=fds[1],
                stderr=fds[2],
            )
        finally:
            if null >= 0:
                os.close(null)
        if result.code != 0:
            raise self._fail(verb, container_id, offset, result.stderr)
        return result

    @staticmethod
    def _read_pid(path: str) -> int:
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError) as e:
            raise Internal(f"runtime pid file {path}: {e}") from None

    # -- RuntimeBackend ------------------------------------------------------------------

    def create(
        self,
        container_id: str,
        bundle: str,
        stdio: list[int | None],
        console_socket: str | None,
    ) -> int:
        pid_file = os.path.join(bundle, "init.pid")
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        if self.cfg.no_pivot_root:
            args.append("--no-pivot")
        if self.cfg.no_new_keyring:
            args.append("--no-new-keyring")
        args.append(container_id)
        # With a terminal the container's stdio is the pty: capture the runtime's own output.
        self._run("create", container_id, args, stdio=None if console_socket else stdio)
        return self._read_pid(pid_file)

    def start(self, container_id: str) -> None:
        self._run("start", container_id, ["start", container_id])

    def kill(self, container_id: str, sig: int, all_processes: bool) -> None:
        args = (
            ["kill", "--all", container_id, str(sig)]
            if all_processes
            else [
                "kill",
                container_id,
                str(sig),
            ]
        )
        try:
            self._run("kill", container_id, args)
        except FailedPrecondition as e:
            raise NotFound(str(e)) from None

    def delete(self, container_id: str, force: bool) -> None:
        args = ["delete", "--force", container_id] if force else ["delete", container_id]
        try:
            self._run("delete", container_id, args)
        except NotFound:
            pass  # already gone: what delete is for

    def exec(
        self,
        container_id: str,
        exec_id: str,
        bundle: str,
        process: dict[str, Any],
        stdio: list[int | None],
        console_socket: str | None,
    ) -> int:
        pid_file = os.path.join(bundle, f"{exec_id}.pid")
        fd, spec_path = tempfile.mkstemp(prefix="kettle-process", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(process, f)
            args = ["exec", "--process", spec_path, "--detach", "--pid-file", pid_file]
            if console_socket:
                args += ["--console-socket", console_socket]
            args.append(container_id)
            self._run("exec", container_id, args, stdio=None if console_socket else stdio)
        finally:
            os.unlink(spec_path)
        return self._read_pid(pid_file)

    def pause(self, container_id: str) -> None:
        self._run("pause", container_id, ["pause", container_id])

    def resume(self, container_id: str) -> None:
        self._run("resume", container_id, ["resume", container_id])

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        data = json.dumps(resources).encode()
        self._run("update", container_id, ["update", "--resources", "-", container_id], input=data)

    def pids(self, container_id: str) -> list[int]:
        out = self._run("ps", container_id, ["ps", "--format", "json", container_id]).stdout
        try:
            return [int(p) for p in json.loads(out or b"[]")]
        except (ValueError, TypeError) as e:
            raise Internal(f"ps {container_id}: unexpected output: {e}") from None

    def stats(self, container_id: str) -> dict[str, Any]:
        out = self._run("events", container_id, ["events", "--stats", container_id]).stdout
        try:
            event = json.loads(out)
        except ValueError as e:
            raise Internal(f"events --stats {container_id}: unexpected output: {e}") from None
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, dict):
            raise Internal(f"events --stats {container_id}: no stats data in the output")
        return data
