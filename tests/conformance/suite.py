"""The OCI runtime-tools validation suite: find its sources, build it, run it, read its TAP.

runtime-tools' `make localvalidation` builds `runtimetest` (statically: it runs inside the
container, on a busybox root filesystem) and every `validation/<name>/` main package, then runs
each program from a directory that holds `runtimetest` and `rootfs-<goarch>.tar.gz`, with
RUNTIME naming the runtime under test.  Each program prints TAP version 13.

Sources are looked up, in order, in KETTLE_RUNTIME_TOOLS_SRC (a runtime-tools checkout, or a
GOPATH root holding src/github.com/opencontainers/runtime-tools), then in every GOPATH entry and
/usr/share/gocode.  Debian's golang-github-opencontainers-runtime-tools-dev installs only the
library packages there (generate, validate, specerror, cgroups, ...), not validation/ nor
cmd/runtimetest, so on a stock Debian machine the suite is reported missing, by name.

github.com/mndrix/tap-go is not packaged by Debian either: gopath/ beside this file holds a
small stand-in with the same API, used only when no GOPATH entry has the real one.

Run by hand: `python -m tests.conformance.suite [--runtime NAME=PATH ...] [PROGRAM ...]`
(scripts/conformance.sh does this for kettle-runtime and runc).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMPORT_PATH = "github.com/opencontainers/runtime-tools"
SOURCE_ENV = "KETTLE_RUNTIME_TOOLS_SRC"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STUB_GOPATH = HERE / "gopath"
DEFAULT_CACHE = REPO / ".tmp" / "conformance"
# Programs sleep and poll (1 s steps, 10 s waits); the slowest (kill, killsig, delete) need ~40 s.
PROGRAM_TIMEOUT = 240.0

# Programs that test what this host cannot provide.  Each is skipped with its reason, never
# passed: the reason names the missing feature so that a host that has it can drop the entry.
INAPPLICABLE: dict[str, str] = {
    "linux_process_apparmor_profile": "AppArmor is not enabled on this host",
    "linux_mount_label": "SELinux is not enabled on this host (mountLabel needs it)",
    "linux_cgroups_hugetlb": "hugetlb limits need huge pages reserved on the host",
    "linux_cgroups_relative_hugetlb": "hugetlb limits need huge pages reserved on the host",
    "linux_cgroups_network": "net_cls/net_prio cgroup controllers are not mounted on this host",
    "linux_cgroups_relative_network": (
        "net_cls/net_prio cgroup controllers are not mounted on this host"
    ),
    "process_capabilities": (
        "the runtime does not hold every capability here (root lacks some, e.g. "
        "CAP_SYS_RESOURCE), so it cannot grant them all to the container"
    ),
}


def _holds_every_capability() -> bool:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16) == (1 << (last + 1)) - 1
    return False


def _host_has(controller: str) -> bool:
    return Path("/sys/fs/cgroup", controller).is_dir()


def inapplicable_reason(program: str) -> str | None:
    """Why `program` cannot run on this host, or None when it can."""
    reason = INAPPLICABLE.get(program)
    if reason is None:
        return None
    # Probe, so that a host with the feature runs the program instead of skipping it.
    if "network" in program and _host_has("net_cls") and _host_has("net_prio"):
        return None
    if "apparmor" in program and Path("/sys/kernel/security/apparmor").is_dir():
        return None
    if "mount_label" in program and Path("/sys/fs/selinux/enforce").exists():
        return None
    if program == "process_capabilities" and _holds_every_capability():
        return None
    return reason


# --- finding the sources ------------------------------------------------------------------------


def go_binary() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    for candidate in ("/usr/lib/go/bin/go", "/usr/local/go/bin/go"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _gopath_roots() -> list[Path]:
    roots = [Path(p) for p in os.environ.get("GOPATH", "").split(":") if p]
    roots.append(Path.home() / "go")
    roots.append(Path("/usr/share/gocode"))
    return roots


def _is_checkout(path: Path) -> bool:
    return (path / "validation").is_dir() and (path / "cmd" / "runtimetest").is_dir()


@dataclass(frozen=True)
class Sources:
    checkout: Path  # the runtime-tools tree holding validation/ and cmd/runtimetest
    gopath: list[Path]  # GOPATH for the build, checkout's root first


def find_sources() -> tuple[Sources | None, str]:
    """The sources and an empty string, or None and why they are missing."""
    looked: list[str] = []
    override = os.environ.get(SOURCE_ENV)
    candidates: list[Path] = []
    if override:
        path = Path(override)
        candidates += [path, path / "src" / IMPORT_PATH]
    candidates += [root / "src" / IMPORT_PATH for root in _gopath_roots()]
    for checkout in candidates:
        looked.append(str(checkout))
        if _is_checkout(checkout):
            roots = [r for r in _gopath_roots() if r.is_dir()]
            return Sources(checkout=checkout, gopath=roots), ""
    library = Path("/usr/share/gocode/src") / IMPORT_PATH
    detail = (
        f"{library} has only the library packages (Debian's "
        "golang-github-opencontainers-runtime-tools-dev ships no validation/ nor "
        "cmd/runtimetest)"
        if library.is_dir()
        else "golang-github-opencontainers-runtime-tools-dev is not installed"
    )
    return None, (
        f"runtime-tools validation sources not found ({detail}); set {SOURCE_ENV} to a "
        f"runtime-tools checkout. Looked in: {', '.join(looked)}"
    )


def list_programs(sources: Sources) -> list[str]:
    base = sources.checkout / "validation"
    return sorted(
        d.name for d in base.iterdir() if d.is_dir() and d.name != "util" and any(d.glob("*.go"))
    )


# --- building -----------------------------------------------------------------------------------


@dataclass
class Suite:
    directory: Path  # runtimetest, the rootfs tarball and <program>.t
    programs: list[str]
    build_errors: dict[str, str] = field(default_factory=dict)

    def binary(self, program: str) -> Path:
        return self.directory / f"{program}.t"


def _source_digest(sources: Sources, go: str) -> str:
    h = hashlib.sha256()
    h.update(subprocess.run([go, "version"], capture_output=True, text=True).stdout.encode())
    trees = [sources.checkout / "validation", sources.checkout / "cmd" / "runtimetest"]
    trees.append(STUB_GOPATH)
    for tree in trees:
        for path in sorted(tree.rglob("*.go")):
            st = path.stat()
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update(Path("/bin/busybox").read_bytes() if Path("/bin/busybox").exists() else b"")
    return h.hexdigest()[:16]


def _go_env(sources: Sources, cache: Path) -> dict[str, str]:
    gopath = [str(p) for p in sources.gopath]
    # The checkout itself may live outside every GOPATH (KETTLE_RUNTIME_TOOLS_SRC): link it into
    # a private one, listed first so that its validation/ wins over a partial library copy.
    link_root = cache / "gopath"
    link = link_root / "src" / IMPORT_PATH
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(sources.checkout)
    gopath.insert(0, str(link_root))
    gopath.append(str(STUB_GOPATH))  # last: a real tap-go anywhere else wins
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPATH=":".join(gopath),
        GOPROXY="off",
        GOFLAGS="",
        GOCACHE=str(cache / "gocache"),
        CGO_ENABLED="0",
    )
    return env


def _build_rootfs(target: Path) -> None:
    """A busybox root filesystem like runtime-tools' rootfs tarball (sh, coreutils applets)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise FileNotFoundError("/bin/busybox (busybox-static) is needed for the test rootfs")
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tempfile.TemporaryDirectory(prefix="kettle-conformance-rootfs-") as tmp:
        root = Path(tmp)
        for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "root", "run", "var"):
            (root / d).mkdir()
        (root / "tmp").chmod(0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in applets:
            link = root / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
        (root / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(root, arcname=".")
        partial.rename(target)


def build(cache: Path = DEFAULT_CACHE) -> Suite:
    """Build runtimetest, every validation program and the rootfs tarball, once per source."""
    sources, why = find_sources()
    if sources is None:
        raise FileNotFoundError(why)
    go = go_binary()
    if go is None:
        raise FileNotFoundError("go is not installed (Debian package golang-go)")
    cache.mkdir(parents=True, exist_ok=True)
    directory = cache / f"build-{_source_digest(sources, go)}"
    programs = list_programs(sources)
    errors_file = directory / "build-errors.txt"
    if (directory / ".complete").exists():
        return Suite(directory, programs, _read_errors(errors_file))

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    env = _go_env(sources, cache)
    goarch = subprocess.run(
        [go, "env", "GOARCH"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    runtimetest = subprocess.run(
        [go, "build", "-tags", "netgo osusergo", "-o", str(directory / "runtimetest"),
         f"{IMPORT_PATH}/cmd/runtimetest"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if runtimetest.returncode != 0:
        raise RuntimeError(f"building runtimetest failed:\n{runtimetest.stderr}")
    errors: dict[str, str] = {}
    for program in programs:
        out = subprocess.run(
            [go, "build", "-o", str(directory / f"{program}.t"),
             f"{IMPORT_PATH}/validation/{program}"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        if out.returncode != 0:
            errors[program] = out.stderr.strip()
    _build_rootfs(directory / f"rootfs-{goarch}.tar.gz")
    errors_file.write_text("".join(f"{k}\t{v!r}\n" for k, v in errors.items()))
    (directory / ".complete").touch()
    return Suite(directory, programs, errors)


def _read_errors(path: Path) -> dict[str, str]:
    import ast

    errors: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, text = line.partition("\t")
            errors[name] = str(ast.literal_eval(text))
    return errors


# --- running ------------------------------------------------------------------------------------


@dataclass
class Run:
    program: str
    runtime: str
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def run(suite: Suite, program: str, runtime: str, timeout: float = PROGRAM_TIMEOUT) -> Run:
    """Run one validation program against `runtime` (a path or a name on PATH).

    The caller must be a child subreaper that reaps (container inits outlive the runtime
    commands that start them).  Bundles go to a private TMPDIR, removed afterwards.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"kettle-conformance-{program}-"))
    tmp.chmod(0o755)
    env = dict(os.environ, RUNTIME=runtime, TMPDIR=str(tmp))
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(suite.binary(program))],
        cwd=suite.directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    finally:
        _unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_suite_cgroups()
    return Run(
        program=program,
        runtime=runtime,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        seconds=time.monotonic() - started,
    )


def _unmount_under(tmp: Path) -> None:
    """Detach mounts left under our private TMPDIR.

    A runtime that runs a container without a mount namespace (linux_ns_itype asks for that)
    mounts /proc, /dev, ... onto the bundle's rootfs in the host's mount namespace; whatever
    is left there after `delete` is a leak of that runtime, but it must not outlive the test.
    """
    prefix = f"{tmp}/"
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4].replace("\\040", " ")
        if mountpoint.startswith(prefix):
            targets.append(mountpoint)
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def _remove_suite_cgroups() -> None:
    """rmdir (only when empty) the fixed cgroups the programs use: cgroups.AbsCgroupPath and the
    parents of RelCgroupPath, which runtimes create and, like runc, leave behind."""
    bases: set[Path] = set()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        names = [c.removeprefix("name=") for c in controllers.split(",") if c] or ["unified"]
        for name in names:
            root = Path("/sys/fs/cgroup", name)
            if not root.is_dir() and name == "unified":
                root = Path("/sys/fs/cgroup")
            bases.update({root, root / path.lstrip("/")})
    for base in bases:
        for rel in ("testdir/cgrouptest/container", "testdir/cgrouptest", "testdir", "cgrouptest"):
            with contextlib.suppress(OSError):
                (base / rel).rmdir()


# --- reading TAP --------------------------------------------------------------------------------

_RESULT = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(?:-\s*)?([^#]*)(?:#\s*(\S+)\s*(.*))?$")


@dataclass
class Tap:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # `not ok` without SKIP/TODO
    skipped: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)
    # YAML blocks printed before any result: the hook programs report their failures only so.
    orphan_errors: list[str] = field(default_factory=list)
    plan: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.orphan_errors


def parse_tap(text: str) -> Tap:
    tap = Tap()
    seen_result = False
    yaml: list[str] | None = None
    indent = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if yaml is not None:
            if line.strip() == "...":
                block = "\n".join(yaml)
                # Only a top-level `error:` key counts: a nested one belongs to an inner TAP
                # stream (RuntimeInsideValidate quotes runtimetest's output) judged by its result.
                if not seen_result and any(y.startswith(f"{indent}error:") for y in yaml):
                    tap.orphan_errors.append(block)
                yaml = None
            else:
                yaml.append(line)
            continue
        if line.strip() == "---" and raw.startswith(" "):
            yaml = []
            indent = raw[: len(raw) - len(raw.lstrip())]
            continue
        plan = re.match(r"^1\.\.(\d+)", line)
        if plan:
            tap.plan = int(plan.group(1))
            continue
        m = _RESULT.match(line)
        if not m:
            continue
        seen_result = True
        status, _, desc, directive, reason = m.groups()
        desc = desc.strip()
        kind = (directive or "").upper()
        if kind.startswith("SKIP"):
            tap.skipped.append(f"{desc} {reason or ''}".strip())
        elif kind.startswith("TODO"):
            tap.todo.append(desc)
        elif status == "ok":
            tap.passed.append(desc)
        else:
            tap.failed.append(desc)
    return tap


def verdict(result: Run) -> tuple[bool, str]:
    """(passed, explanation) for one run: TAP failures, a crash, or a timeout all fail it."""
    tap = parse_tap(result.stdout)
    problems: list[str] = []
    if result.timed_out:
        problems.append(f"timed out after {result.seconds:.0f}s")
    elif result.returncode != 0:
        problems.append(f"exited {result.returncode}")
    problems += [f"not ok: {d}" for d in tap.failed]
    problems += [f"error reported outside any result:\n{b}" for b in tap.orphan_errors]
    if not problems:
        return True, ""
    return False, "\n".join(
        problems
    ) + f"\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def summary(result: Run) -> str:
    tap = parse_tap(result.stdout)
    passed, _ = verdict(result)
    state = "PASS" if passed else ("TIMEOUT" if result.timed_out else "FAIL")
    bad = len(tap.failed) + len(tap.orphan_errors)
    return (
        f"{state} ok={len(tap.passed)} not_ok={bad} skip={len(tap.skipped)} "
        f"todo={len(tap.todo)} rc={result.returncode}"
    )


# --- command line -------------------------------------------------------------------------------


def _become_subreaper() -> None:
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO))
    from kettle.syscalls import prctl
    from tests.support import reaper

    prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: container inits come back to us, and are reaped
    reaper.start()


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="runtime to validate (repeatable; default kettle-runtime beside this python)",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--verbose", "-v", action="store_true", help="print failing TAP")
    parser.add_argument("programs", nargs="*")
    args = parser.parse_args(argv)

    sources, why = find_sources()
    if sources is None:
        print(f"conformance: {why}", file=sys.stderr)
        return 2
    runtimes: list[tuple[str, str]] = []
    for spec in args.runtime or [
        f"kettle-runtime={Path(sys.executable).with_name('kettle-runtime')}"
    ]:
        name, _, path = spec.partition("=")
        runtimes.append((name, path or name))
    _become_subreaper()
    suite = build(args.cache)
    programs = args.programs or suite.programs
    failures = 0
    width = max(len(p) for p in programs)
    print(f"{'program':<{width}}  " + "  ".join(f"{n:<44}" for n, _ in runtimes))
    for program in programs:
        cells: list[str] = []
        details: list[str] = []
        reason = inapplicable_reason(program)
        for name, path in runtimes:
            if reason:
                cells.append(f"SKIP ({reason})")
            elif program in suite.build_errors:
                cells.append("BUILD-FAIL")
                failures += 1
            else:
                result = run(suite, program, path)
                passed, why = verdict(result)
                cells.append(summary(result))
                if not passed:
                    failures += name.startswith("kettle")
                    details.append(f"--- {program} on {name}:\n{why}")
        print(f"{program:<{width}}  " + "  ".join(f"{c:<44}" for c in cells), flush=True)
        if args.verbose:
            for d in details:
                print(d)
    return 1 if failures else 0


if __name__ == "__main__":
    if platform.system() != "Linux":
        sys.exit("conformance: Linux only")
    sys.exit(main())
