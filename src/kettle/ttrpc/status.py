"""Errors <-> ttrpc status codes (google.rpc.Code numbers), in both directions."""

from __future__ import annotations

import errno

from kettle.errors import GRPC_CODES, KettleError, SyscallError, from_grpc_code, grpc_code

CODE_NAMES: dict[int, str] = {number: name for name, number in GRPC_CODES.items()}

OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

# What Go ttrpc's server does for the standard errors it recognises (ESRCH added: a signal to
# a process that is gone means "not found", which is what containerd expects from Kill).
_ERRNO_CODES = {
    errno.ENOENT: NOT_FOUND,
    errno.ESRCH: NOT_FOUND,
    errno.EEXIST: ALREADY_EXISTS,
    errno.EPERM: PERMISSION_DENIED,
    errno.EACCES: PERMISSION_DENIED,
    errno.EINVAL: INVALID_ARGUMENT,
    errno.EPIPE: FAILED_PRECONDITION,
    errno.ETIMEDOUT: DEADLINE_EXCEEDED,
}


def status_for(exc: BaseException) -> tuple[int, str]:
    """The (code, message) a server answers with when a handler raised exc."""
    if isinstance(exc, SyscallError) and exc.errno in _ERRNO_CODES:
        return _ERRNO_CODES[exc.errno], str(exc)
    if isinstance(exc, KettleError):
        return grpc_code(exc), str(exc)
    if isinstance(exc, OSError):
        if exc.errno in _ERRNO_CODES:
            return _ERRNO_CODES[exc.errno], str(exc)
        if isinstance(exc, TimeoutError):
            return DEADLINE_EXCEEDED, str(exc)
        return UNKNOWN, str(exc)
    if isinstance(exc, EOFError):
        return OUT_OF_RANGE, str(exc) or "eof"
    if isinstance(exc, NotImplementedError):
        return UNIMPLEMENTED, str(exc) or "not implemented"
    return UNKNOWN, str(exc) or type(exc).__name__


def error_for(code: int, message: str) -> KettleError:
    """The Kettle error for a non-OK status received from a peer.

    Codes without a class of their own (UNKNOWN, ABORTED, OUT_OF_RANGE, ...) come back as a
    plain KettleError whose `code` names them, so grpc_code() gives the same number back.
    """
    err = from_grpc_code(code, message)
    name = CODE_NAMES.get(code, "UNKNOWN")
    if type(err) is KettleError and name != err.code:
        err.code = name
    return err
