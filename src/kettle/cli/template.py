"""Docker's --format: `table`, `json`, or a Go-template subset: `{{.Field}}`, `{{json .Field}}`,
`{{.Field | printf}}` is not supported; a leading `table ` makes headed columns."""

from __future__ import annotations

import json
import re
from typing import Any

from kettle.errors import InvalidArgument

_FIELD = re.compile(r"\{\{\s*(json\s+)?\.(\w+)\s*\}\}")


def fields_of(template: str) -> list[str]:
    return [m.group(2) for m in _FIELD.finditer(template)]


def check(template: str, known: list[str]) -> None:
    leftover = _FIELD.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise InvalidArgument(f"--format {template!r}: only {{{{.Field}}}} and {{{{json .Field}}}}")
    for name in fields_of(template):
        if name not in known:
            raise InvalidArgument(
                f"--format: unknown field .{name} (known: {', '.join('.' + k for k in known)})"
            )


def render(template: str, row: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        value = row[m.group(2)]
        return json.dumps(value) if m.group(1) else str(value)

    return _FIELD.sub(one, template.replace("\\t", "\t").replace("\\n", "\n"))


def output(
    fmt: str,
    rows: list[dict[str, Any]],
    known: list[str],
    headers: dict[str, str] | None = None,
) -> str:
    """Rows through a user's template (with `table`: a header and aligned columns)."""
    from kettle.cli.format import table

    is_table = fmt.startswith("table ")
    template = fmt[len("table ") :] if is_table else fmt
    check(template, known)
    if not is_table:
        return "\n".join(render(template, r) for r in rows)
    names = fields_of(template)
    names_of = headers or {}
    heads = [names_of.get(n) or re.sub(r"(?<!^)(?=[A-Z])", " ", n).upper() for n in names]
    cells = [[str(r[n]) for n in names] for r in rows]
    return table(heads, cells)
