"""kctl inspect -f: Go-template paths over the JSON of a container."""

from __future__ import annotations

from typing import Any

import pytest

from kettle.cli.template import render_object
from kettle.errors import InvalidArgument

C: dict[str, Any] = {
    "id": "abc",
    "status": "exited",
    "exit_code": 3,
    "tty": False,
    "labels": {"tier": "web"},
    "restart_policy": {"name": "always", "max_retries": 0},
    "health": None,
}


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("{{.status}}", "exited"),
        ("{{ .status }} {{.exit_code}}", "exited 3"),
        ("{{.ExitCode}}", "3"),  # Docker's spelling finds kettle's field
        ("{{.RestartPolicy.Name}}", "always"),
        ("{{.restart_policy.max_retries}}", "0"),
        ("{{.labels.tier}}", "web"),
        ("{{json .labels}}", '{"tier": "web"}'),
        ("{{.labels}}", '{"tier": "web"}'),
        ("{{.tty}}", "false"),
        ("{{.health}}", "<nil>"),
        ("{{json .health}}", "null"),
        ("id={{.id}}\\t{{.status}}", "id=abc\texited"),
        ("no fields here", "no fields here"),
    ],
)
def test_render(template: str, text: str) -> None:
    assert render_object(template, C) == text


def test_the_whole_object() -> None:
    assert render_object("{{json .}}", {"a": 1}) == '{"a": 1}'


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.State.Status}}", "unknown field .State (known: .id, .status,"),
        ("{{.restart_policy.nope}}", "unknown field .nope of .restart_policy (known: .name,"),
        ("{{.status.x}}", ".status has no fields (at .x)"),
        ("{{.health.status}}", ".health has no fields (at .status)"),
        ('{{index .labels "tier"}}', "only {{.Path}} and {{json .Path}}"),
        ("{{.status", "only {{.Path}} and {{json .Path}}"),
    ],
)
def test_bad_templates_name_the_problem(template: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        render_object(template, C)
    assert message in str(info.value)
