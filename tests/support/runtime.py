"""A thin wrapper over an OCI runtime's runc-compatible command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.bundle import Bundle

ENV_VAR = "KETTLE_TEST_RUNTIME"


def runtime_under_test() -> Path:
    """KETTLE_TEST_RUNTIME, else the kettle-runtime next to the interpreter running the tests."""
    value = os.environ.get(ENV_VAR)
    if value:
        return Path(value)
    return Path(sys.executable).parent / "kettle-runtime"


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"command: {' '.join(self.argv)}\nexit status: {self.returncode}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


class CommandFailed(AssertionError):
    """A runtime command that was expected to succeed failed."""


class Runtime:
    """Runs `binary [--root ROOT] ARGS...`; every call gets a timeout so a hang fails a test."""

    def __init__(self, binary: Path, root: Path | None, global_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.root = root
        self.global_args = list(global_args)

    @property
    def name(self) -> str:
        return self.binary.name

    @property
    def is_kettle(self) -> bool:
        return "kettle" in self.binary.name

    def argv(self, *args: str) -> list[str]:
        argv = [str(self.binary)]
        if self.root is not None:
            argv += ["--root", str(self.root)]
        return argv + self.global_args + list(args)

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        output: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> Result:
        """Runs one command.

        With `output`, stdout and stderr go to the files `output` and `output`.err instead of
        pipes: the runtime hands its stdio to a container that outlives it (create, run -d,
        exec -d), and a pipe would then never reach EOF.
        """
        argv = self.argv(*args)
        if output is None:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=cwd,
                pass_fds=pass_fds,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
            result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        else:
            err_path = output.with_name(output.name + ".err")
            with output.open("w") as out, err_path.open("w") as err:
                proc = subprocess.run(
                    argv,
                    input=input,
                    stdout=out,
                    stderr=err,
                    text=True,
                    timeout=timeout,
                    env=env,
                    cwd=cwd,
                    pass_fds=pass_fds,
                    stdin=None if input is not None else subprocess.DEVNULL,
                )
            result = Result(argv, proc.returncode, output.read_text(), err_path.read_text())
        if check and result.returncode != 0:
            raise CommandFailed(result.describe())
        return result

    # ---- conveniences over the subcommands ------------------------------------------------

    def create(self, bundle: Bundle, *flags: str, check: bool = True) -> Result:
        return self(
            "create",
            "--bundle",
            str(bundle.path),
            *flags,
            bundle.id,
            output=bundle.path / "create.out",
            check=check,
        )

    def start(self, cid: str, check: bool = True) -> Result:
        return self("start", cid, check=check)

    def state(self, cid: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self("state", cid).stdout)
        return state

    def delete(self, cid: str, force: bool = False, check: bool = True) -> Result:
        return self("delete", *(["--force"] if force else []), cid, check=check)

    def kill(self, cid: str, signal: str = "KILL", *flags: str, check: bool = True) -> Result:
        return self("kill", *flags, cid, signal, check=check)

    def wait_status(self, cid: str, status: str, timeout: float = 20) -> dict[str, Any]:
        """Polls `state` until it reports `status`; fails the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        state = self.state(cid)
        while state["status"] != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"container {cid} stayed {state['status']!r}, not {status!r}")
            time.sleep(0.05)
            state = self.state(cid)
        return state
