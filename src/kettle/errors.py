"""The one exception tree of Kettle, and its mapping to exit codes and gRPC status codes.

Every layer raises these (never a bare Exception) so that the command-line adapters and the
gRPC/ttrpc servers can translate an error in one place.  Messages are lowercase and name the
id, path or spec field at fault.
"""

from __future__ import annotations

import errno as _errno


class KettleError(Exception):
    """Base of every error Kettle raises on purpose."""

    #: gRPC status code name (google.rpc.Code); see GRPC_CODES.
    code = "UNKNOWN"
    #: process exit status used by the command-line tools (runc uses 1 for every failure).
    exit_code = 1


class InvalidArgument(KettleError):
    code = "INVALID_ARGUMENT"


class NotFound(KettleError):
    code = "NOT_FOUND"


class AlreadyExists(KettleError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(KettleError):
    code = "FAILED_PRECONDITION"


class PermissionDenied(KettleError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(KettleError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(KettleError):
    code = "UNAVAILABLE"


class Unimplemented(KettleError):
    code = "UNIMPLEMENTED"


class DeadlineExceeded(KettleError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(KettleError):
    code = "CANCELLED"


class Internal(KettleError):
    code = "INTERNAL"


class SyscallError(KettleError):
    """A libc call failed.  Keeps errno, the call's name and the path it acted on."""

    code = "INTERNAL"

    def __init__(self, call: str, err: int, path: str | None = None, detail: str = "") -> None:
        self.call = call
        self.errno = err
        self.path = path
        self.strerror = _errno.errorcode.get(err, str(err))
        text = _strerror(err)
        where = f" {path}" if path else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{call}{where}{extra}: {text}")

    @property
    def is_enoent(self) -> bool:
        return self.errno == _errno.ENOENT


def oserror_text(e: OSError) -> str:
    """The lowercase reason of an OSError, for one-line messages."""
    return (e.strerror or str(e)).lower()


def _strerror(err: int) -> str:
    import os

    return os.strerror(err).lower()


#: google.rpc.Code numbers, shared by the gRPC and ttrpc adapters.
GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

_BY_CODE: dict[str, type[KettleError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        Unimplemented,
        DeadlineExceeded,
        Cancelled,
        Internal,
    )
}


def grpc_code(exc: BaseException) -> int:
    """The gRPC status number for an exception (UNKNOWN for foreign ones)."""
    if isinstance(exc, KettleError):
        return GRPC_CODES.get(exc.code, 2)
    return 2


def from_code_name(name: str, message: str) -> KettleError:
    """The Kettle error for a code name (``KettleError.code``) carried across a process edge."""
    return _BY_CODE.get(name, Internal)(message)


def from_grpc_code(code: int, message: str) -> KettleError:
    """The Kettle error for a status received from a peer."""
    for name, number in GRPC_CODES.items():
        if number == code:
            cls = _BY_CODE.get(name, KettleError)
            return cls(message)
    return KettleError(message)


def exit_code(exc: BaseException) -> int:
    """Exit status of a command-line tool that failed with exc."""
    if isinstance(exc, KettleError):
        return exc.exit_code
    return 1
