"""jsonio must behave as the json package on the documents the runtime reads and writes."""

from __future__ import annotations

import json
import math

import pytest

from kettle.runtime import jsonio

DOCS = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, -3e10, True, False, None], "c": {"d": 'é\u2603\n\t"\\'}},
    "just a string",
    12345678901234567890,
    {"nested": [[[{"x": []}]]], "unicode": "\U0001f600"},
]


@pytest.mark.parametrize("doc", DOCS)
def test_roundtrip_matches_json(doc: object) -> None:
    assert jsonio.dumps(doc) == json.dumps(doc)
    assert jsonio.loads(json.dumps(doc)) == doc
    assert jsonio.loads(jsonio.dumps(doc).encode()) == doc


def test_separators_and_indent() -> None:
    doc = {"a": [1, 2]}
    assert jsonio.dumps(doc, separators=(",", ":")) == '{"a":[1,2]}'
    assert jsonio.dumps(doc, indent=2) == json.dumps(doc, indent=2)


def test_whitespace_around_document() -> None:
    assert jsonio.loads(' \n\t{"a": 1}\r\n ') == {"a": 1}


def test_constants() -> None:
    assert math.isnan(jsonio.loads("NaN"))
    assert jsonio.loads("[Infinity, -Infinity]") == [math.inf, -math.inf]


@pytest.mark.parametrize("bad", ["", "{", '{"a": 1} x', "[1,]", "{'a': 1}", "nul", "\x00"])
def test_malformed_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        jsonio.loads(bad)


def test_unserialisable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not json serializable"):
        jsonio.dumps({"a": object()})


def test_importing_jsonio_does_not_import_json() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import kettle.runtime.jsonio; "
        "print('json' in sys.modules, 're' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-IS", "-c", f"import sys; sys.path[:0]={sys.path!r}; {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]
