"""kettled's default seccomp profile, and Docker-format profiles turned into OCI linux.seccomp.

The default has the effect of Docker's: everything not listed fails with EPERM; ordinary
syscalls are allowed; the ones that reach beyond the container (mounting, loading modules,
setting the clock, tracing...) only when the container holds the capability that the kernel
would check anyway; clone may not make namespaces without CAP_SYS_ADMIN (and clone3, whose flags
a filter cannot see, answers ENOSYS so that libcs fall back to clone); personality only switches
between the harmless execution domains.

The profile is data (:data:`RULES`): each :class:`Rule` says which syscalls, under which
condition (capabilities held or not, host architecture, kernel version), get which action.
:func:`default_profile` evaluates the conditions for one container.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kettle.errors import InvalidArgument

EPERM = 1
ENOSYS = 38
AF_VSOCK = 40

# linux/sched.h: the clone flags that make a namespace (CLONE_NEWTIME sits in the exit-signal
# byte of clone's flags, so only clone3 and unshare can ask for it).
_CLONE_NEWNS = 0x00020000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    _CLONE_NEWNS
    | _CLONE_NEWCGROUP
    | _CLONE_NEWUTS
    | _CLONE_NEWIPC
    | _CLONE_NEWUSER
    | _CLONE_NEWPID
    | _CLONE_NEWNET
)

# personality(2) values a container may set: the Linux domain, its 32-bit variant, each with
# UNAME26 (old software that needs a 2.6 version string), and 0xffffffff, which only queries.
_PER_LINUX = 0x0000
_UNAME26 = 0x0008
_PER_LINUX32 = 0x20000
_PERSONALITY_QUERY = 0xFFFFFFFF
PERSONALITIES = (
    _PER_LINUX,
    _UNAME26,
    _PER_LINUX32,
    _PER_LINUX32 | _UNAME26,
    _PERSONALITY_QUERY,
)


@dataclass(frozen=True)
class Rule:
    """Syscalls that get `action` when every condition holds."""

    names: tuple[str, ...]
    action: str = "SCMP_ACT_ALLOW"
    errno: int | None = None
    #: OCI args entries (all must match)
    args: tuple[Mapping[str, Any], ...] = ()
    #: the container must hold one of these capabilities
    if_cap: frozenset[str] = frozenset()
    #: ...and none of these
    unless_cap: frozenset[str] = frozenset()
    #: the host (uname -m) must be one of these
    on_machine: frozenset[str] = frozenset()
    not_on_machine: frozenset[str] = frozenset()
    #: lowest kernel (major, minor)
    min_kernel: tuple[int, int] | None = None
    why: str = field(default="", compare=False)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Grouped by what the calls are for; a name a kernel or libseccomp does not know is skipped by
# the runtime, so the lists cover every architecture and recent kernels (the *_time64 forms are
# the 32-bit architectures' y2038 calls).
_FILES = _names(
    """
    access faccessat faccessat2 chdir fchdir getcwd chmod fchmod fchmodat fchmodat2
    chown chown32 fchown fchown32 fchownat lchown lchown32 umask
    open openat openat2 creat close close_range dup dup2 dup3 fcntl fcntl64 flock
    read readv pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2
    lseek _llseek sendfile sendfile64 splice tee vmsplice copy_file_range readahead
    fadvise64 fadvise64_64 fallocate ftruncate ftruncate64 truncate truncate64
    fsync fdatasync sync syncfs sync_file_range
    stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs statfs64
    fstatfs fstatfs64 getdents getdents64
    link linkat symlink symlinkat unlink unlinkat rename renameat renameat2
    mkdir mkdirat rmdir mknod mknodat readlink readlinkat
    utime utimes utimensat utimensat_time64 futimesat
    getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr
    setxattr lsetxattr fsetxattr removexattr lremovexattr fremovexattr
    inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
    name_to_handle_at memfd_create memfd_secret ioctl
    """
)
_POLLING = _names(
    """
    select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64
    epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old
    epoll_pwait epoll_pwait2 eventfd eventfd2 signalfd signalfd4
    timerfd_create timerfd_settime timerfd_settime64 timerfd_gettime timerfd_gettime64
    io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
    pipe pipe2
    """
)
_PROCESSES = _names(
    """
    fork vfork execve execveat exit exit_group wait4 waitid waitpid
    getpid getppid gettid getpgid setpgid getpgrp getsid setsid
    getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32
    getresuid getresuid32 getresgid getresgid32 getgroups getgroups32
    setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32
    setresuid setresuid32 setresgid setresgid32 setfsuid setfsuid32 setfsgid setfsgid32
    setgroups setgroups32 capget capset prctl seccomp
    getrlimit ugetrlimit setrlimit prlimit64 getrusage getpriority setpriority
    ioprio_get ioprio_set sched_yield sched_getaffinity sched_setaffinity
    sched_getattr sched_setattr sched_getparam sched_setparam
    sched_getscheduler sched_setscheduler sched_get_priority_max sched_get_priority_min
    sched_rr_get_interval sched_rr_get_interval_time64 getcpu
    set_tid_address set_robust_list get_robust_list rseq set_thread_area get_thread_area
    futex futex_time64 futex_waitv futex_wake futex_wait futex_requeue membarrier
    pidfd_open pidfd_send_signal process_mrelease
    landlock_create_ruleset landlock_add_rule landlock_restrict_self
    uname sysinfo times getrandom restart_syscall
    """
)
_SIGNALS = _names(
    """
    kill tkill tgkill pause alarm sigaltstack sigreturn rt_sigreturn sigprocmask
    rt_sigaction rt_sigprocmask rt_sigpending rt_sigsuspend rt_sigqueueinfo
    rt_tgsigqueueinfo rt_sigtimedwait rt_sigtimedwait_time64
    """
)
_TIME = _names(
    """
    time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64
    clock_nanosleep clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64
    getitimer setitimer timer_create timer_delete timer_getoverrun
    timer_gettime timer_gettime64 timer_settime timer_settime64
    """
)
_MEMORY = _names(
    """
    brk mmap mmap2 munmap mremap mprotect madvise mincore msync remap_file_pages
    mlock mlock2 mlockall munlock munlockall pkey_alloc pkey_free pkey_mprotect
    map_shadow_stack cachestat
    """
)
_IPC = _names(
    """
    ipc msgget msgsnd msgrcv msgctl semget semop semtimedop semtimedop_time64 semctl
    shmget shmat shmdt shmctl mq_open mq_unlink mq_timedsend mq_timedsend_time64
    mq_timedreceive mq_timedreceive_time64 mq_notify mq_getsetattr
    """
)
_NETWORK = _names(
    """
    socketpair socketcall bind connect listen accept accept4 shutdown
    getsockname getpeername getsockopt setsockopt
    send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64
    """
)

#: Allowed only to a container with the capability the kernel checks for them.
_BY_CAPABILITY: tuple[tuple[str, str], ...] = (
    (
        "CAP_SYS_ADMIN",
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
        "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd "
        "setdomainname sethostname setns syslog umount umount2 unshare",
    ),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "init_module finit_module delete_module"),
    ("CAP_SYS_PACCT", "acct"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    ),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    ("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    ("CAP_SYS_NICE", "get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
)

#: Calls that exist on one architecture family only.
_BY_MACHINE: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"x86_64"}), "arch_prctl modify_ldt"),
    (frozenset({"i386", "i686"}), "modify_ldt"),
    (
        frozenset({"aarch64", "armv7l", "armv8l", "armv6l"}),
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
    ),
    (frozenset({"ppc64le", "ppc64"}), "sync_file_range2 swapcontext"),
    (frozenset({"s390x", "s390"}), "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
    (frozenset({"riscv64"}), "riscv_flush_icache"),
)

_S390 = frozenset({"s390", "s390x"})


def _masked_zero(index: int, mask: int) -> dict[str, Any]:
    return {"index": index, "value": mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}


def _rules() -> tuple[Rule, ...]:
    out: list[Rule] = [
        Rule(_FILES + _POLLING + _PROCESSES + _SIGNALS + _TIME + _MEMORY + _IPC + _NETWORK),
        # vsock reaches the host (and the hypervisor's services) around any network namespace.
        Rule(
            ("socket",),
            args=({"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"},),
            why="every address family but AF_VSOCK",
        ),
        # Before 4.8 a tracer could rewrite a syscall after seccomp had checked it.
        Rule(
            _names("ptrace process_vm_readv process_vm_writev"),
            min_kernel=(4, 8),
            why="seccomp cannot be bypassed with ptrace since Linux 4.8",
        ),
    ]
    out += [
        Rule(
            ("personality",),
            args=({"index": 0, "value": value, "op": "SCMP_CMP_EQ"},),
            why="harmless execution domains only",
        )
        for value in PERSONALITIES
    ]
    out += [
        Rule(
            ("clone",),
            args=(_masked_zero(0, NAMESPACE_FLAGS),),
            unless_cap=frozenset({"CAP_SYS_ADMIN"}),
            not_on_machine=_S390,
            why="threads and processes, but no new namespaces",
        ),
        Rule(
            ("clone",),
            # s390's clone takes the stack first and the flags second
            args=(_masked_zero(1, NAMESPACE_FLAGS),),
            unless_cap=frozenset({"CAP_SYS_ADMIN"}),
            on_machine=_S390,
            why="threads and processes, but no new namespaces",
        ),
        Rule(
            ("clone3",),
            action="SCMP_ACT_ERRNO",
            errno=ENOSYS,
            unless_cap=frozenset({"CAP_SYS_ADMIN"}),
            why="clone3's flags are behind a pointer: make libcs fall back to clone",
        ),
    ]
    out += [Rule(_names(names), if_cap=frozenset({cap})) for cap, names in _BY_CAPABILITY]
    out += [Rule(_names(names), on_machine=machines) for machines, names in _BY_MACHINE]
    return tuple(out)


RULES: tuple[Rule, ...] = _rules()

#: uname -m -> the seccomp architectures a process there may use (native first).
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "i386": ("SCMP_ARCH_X86",),
    "i686": ("SCMP_ARCH_X86",),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "armv6l": ("SCMP_ARCH_ARM",),
    "armv7l": ("SCMP_ARCH_ARM",),
    "armv8l": ("SCMP_ARCH_ARM",),
    "ppc64le": ("SCMP_ARCH_PPC64LE",),
    "ppc64": ("SCMP_ARCH_PPC64", "SCMP_ARCH_PPC"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "s390": ("SCMP_ARCH_S390",),
    "riscv64": ("SCMP_ARCH_RISCV64",),
    "mips64": ("SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS"),
    "mips64el": ("SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_MIPSEL"),
    "loongarch64": ("SCMP_ARCH_LOONGARCH64",),
}

#: uname -m -> Go's GOARCH, which Docker-format profiles name in includes/excludes.arches.
_GOARCH: dict[str, str] = {
    "x86_64": "amd64",
    "i386": "386",
    "i686": "386",
    "aarch64": "arm64",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "s390": "s390",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "mips64el": "mips64le",
    "loongarch64": "loong64",
}


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of a uname release string such as "6.18.0-1-amd64"."""
    text = release if release is not None else os.uname().release
    parts = text.split(".")
    try:
        major = int(parts[0])
        minor = int("".join(c for c in parts[1].split("-")[0] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)
    return (major, minor)


def _applies(rule: Rule, caps: frozenset[str], machine: str, kernel: tuple[int, int]) -> bool:
    if rule.if_cap and not rule.if_cap & caps:
        return False
    if rule.unless_cap & caps:
        return False
    if rule.on_machine and machine not in rule.on_machine:
        return False
    if machine in rule.not_on_machine:
        return False
    return rule.min_kernel is None or kernel >= rule.min_kernel


def _entry(rule: Rule) -> dict[str, Any]:
    entry: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
    if rule.errno is not None:
        entry["errnoRet"] = rule.errno
    if rule.args:
        entry["args"] = [dict(a) for a in rule.args]
    return entry


def default_profile(
    caps: Iterable[str], machine: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """linux.seccomp for a container holding `caps` (its bounding set) on this host."""
    machine = machine or os.uname().machine
    kernel = kernel or kernel_version()
    held = frozenset(caps)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES.get(machine, ())),
        "syscalls": [_entry(r) for r in RULES if _applies(r, held, machine, kernel)],
    }


# --- Docker-format profiles ----------------------------------------------------------------

_DOCKER_ONLY_ENTRY = ("name", "includes", "excludes", "comment", "comments")


def _conditions_hold(
    cond: Any, where: str, caps: frozenset[str], machine: str, kernel: tuple[int, int], inc: bool
) -> bool:
    """Docker's includes (all listed kinds must match) or excludes (any match excludes)."""
    if cond is None:
        return inc
    if not isinstance(cond, Mapping):
        raise InvalidArgument(f"{where}: must be an object")
    goarch = _GOARCH.get(machine, machine)
    matches: list[bool] = []
    for key, value in cond.items():
        if key == "caps":
            matches.append(bool(set(_str_list(value, f"{where}.caps")) & caps))
        elif key == "arches":
            matches.append(goarch in _str_list(value, f"{where}.arches"))
        elif key == "minKernel" and inc:
            if not isinstance(value, str):
                raise InvalidArgument(f'{where}.minKernel: must be a string such as "4.8"')
            matches.append(kernel >= kernel_version(value))
        else:
            raise InvalidArgument(f"{where}: unknown condition {key!r}")
    if inc:
        return all(matches)
    return any(matches)


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where}: must be a list of strings")
    return list(value)


def from_docker(
    profile: Any,
    caps: Iterable[str],
    machine: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """An OCI linux.seccomp object from a profile in Docker's format (archMap, includes,
    excludes, name...) or already in OCI's, for a container holding `caps`."""
    if not isinstance(profile, Mapping):
        raise InvalidArgument("seccomp profile: must be a JSON object")
    machine = machine or os.uname().machine
    kernel = kernel or kernel_version()
    held = frozenset(caps)
    out = {k: v for k, v in profile.items() if k != "archMap"}
    arch_map = profile.get("archMap")
    if arch_map is not None:
        if profile.get("architectures"):
            raise InvalidArgument("seccomp profile: use either architectures or archMap, not both")
        if not isinstance(arch_map, list):
            raise InvalidArgument("seccomp profile: archMap must be a list")
        native = ARCHITECTURES.get(machine, ("",))[0]
        arches: list[str] = []
        for i, item in enumerate(arch_map):
            if not isinstance(item, Mapping) or not isinstance(item.get("architecture"), str):
                raise InvalidArgument(f"seccomp profile: archMap[{i}] needs an architecture")
            if item["architecture"] == native:
                arches = [
                    native,
                    *_str_list(item.get("subArchitectures") or [], "subArchitectures"),
                ]
        out["architectures"] = arches
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise InvalidArgument("seccomp profile: syscalls must be a list")
    entries: list[dict[str, Any]] = []
    for i, raw in enumerate(syscalls):
        where = f"seccomp profile: syscalls[{i}]"
        if not isinstance(raw, Mapping):
            raise InvalidArgument(f"{where}: must be an object")
        if not _conditions_hold(
            raw.get("includes"), f"{where}.includes", held, machine, kernel, True
        ):
            continue
        if raw.get("excludes") is not None and _conditions_hold(
            raw["excludes"], f"{where}.excludes", held, machine, kernel, False
        ):
            continue
        entry = {k: v for k, v in raw.items() if k not in _DOCKER_ONLY_ENTRY}
        names = list(entry.get("names") or [])
        if raw.get("name"):
            names.append(raw["name"])
        entry["names"] = names
        entries.append(entry)
    out["syscalls"] = entries
    return out


def parse(text: str, where: str) -> Any:
    """A profile file's JSON; `where` names it in the error."""
    import json

    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{where}: invalid JSON ({e})") from None
