"""One test per runtime-tools validation program, run against the runtime under test.

A program fails its test when any TAP result is `not ok` without a SKIP/TODO directive, when it
reports an error outside any result (the hook programs do that), when it exits non-zero, or when
it times out.  Programs this host cannot run are skipped with the reason (suite.INAPPLICABLE).
"""

from __future__ import annotations

import pytest

from tests.conformance import suite as rt
from tests.support.runtime import runtime_under_test


def _programs() -> list[str]:
    sources, _ = rt.find_sources()
    if sources is None:
        # One placeholder so that the missing suite shows up as a skip with its reason.
        return ["<validation suite missing>"]
    return rt.list_programs(sources)


@pytest.mark.privileged
@pytest.mark.parametrize("program", _programs())
def test_validation_program(program: str, validation_suite: rt.Suite) -> None:
    reason = rt.inapplicable_reason(program)
    if reason:
        pytest.skip(f"{program}: {reason}")
    if program in validation_suite.build_errors:
        pytest.fail(f"{program} does not build:\n{validation_suite.build_errors[program]}")
    result = rt.run(validation_suite, program, str(runtime_under_test()))
    passed, why = rt.verdict(result)
    assert passed, f"{program} on {result.runtime}: {why}"
