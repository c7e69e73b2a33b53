"""Status codes <-> kettle.errors."""

from __future__ import annotations

import errno

import pytest

from kettle import errors
from kettle.ttrpc.status import CODE_NAMES, error_for, status_for


@pytest.mark.parametrize("code", sorted(c for c in CODE_NAMES if c != 0))
def test_every_code_survives_a_round_trip(code: int) -> None:
    err = error_for(code, "why")
    assert isinstance(err, errors.KettleError)
    assert str(err) == "why"
    assert status_for(err) == (code, "why")


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (3, errors.InvalidArgument),
        (4, errors.DeadlineExceeded),
        (5, errors.NotFound),
        (6, errors.AlreadyExists),
        (7, errors.PermissionDenied),
        (8, errors.ResourceExhausted),
        (9, errors.FailedPrecondition),
        (12, errors.Unimplemented),
        (13, errors.Internal),
        (14, errors.Unavailable),
        (1, errors.Cancelled),
    ],
)
def test_codes_come_back_as_their_error_class(code: int, cls: type[errors.KettleError]) -> None:
    assert type(error_for(code, "x")) is cls


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.NotFound("container c1 does not exist"), 5),
        (errors.AlreadyExists("id e1"), 6),
        (errors.FailedPrecondition("not started"), 9),
        (errors.SyscallError("kill", errno.ESRCH), 5),
        (errors.SyscallError("mount", errno.EPERM, "/x"), 7),
        (errors.SyscallError("mount", errno.ENOSPC, "/x"), 13),
        (FileNotFoundError(errno.ENOENT, "No such file"), 5),
        (ProcessLookupError(errno.ESRCH, "No such process"), 5),
        (FileExistsError(errno.EEXIST, "File exists"), 6),
        (PermissionError(errno.EACCES, "Permission denied"), 7),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), 9),
        (OSError(errno.EINVAL, "Invalid argument"), 3),
        (OSError(errno.EIO, "I/O error"), 2),
        (EOFError(), 11),
        (NotImplementedError(), 12),
        (ValueError("bug"), 2),
    ],
)
def test_handler_exceptions_map_like_go_ttrpc(exc: BaseException, code: int) -> None:
    assert status_for(exc)[0] == code


def test_unknown_code_number_is_unknown() -> None:
    err = error_for(99, "from the future")
    assert errors.grpc_code(err) == 2
