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


# {{.a.b}} (any depth) or {{.}}, for one object (inspect).
_PATH = re.compile(r"\{\{\s*(json\s+)?\.((?:\w+)(?:\.\w+)*)?\s*\}\}")


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def lookup(obj: Any, path: str, template: str) -> Any:
    """obj's field at a dotted path.  Names match case-insensitively and without underscores,
    so Docker's spelling finds kettle's: .ExitCode is exit_code, .RestartPolicy.Name is
    restart_policy.name."""
    value = obj
    walked = ""
    for part in path.split(".") if path else ():
        if not isinstance(value, dict):
            raise InvalidArgument(f"--format {template!r}: .{walked} has no fields (at .{part})")
        key = part if part in value else next((k for k in value if _norm(k) == _norm(part)), None)
        if key is None:
            known = ", ".join("." + k for k in value)
            where = f" of .{walked}" if walked else ""
            raise InvalidArgument(f"--format: unknown field .{part}{where} (known: {known})")
        value = value[key]
        walked = f"{walked}.{key}" if walked else key
    return value


def _text(value: Any) -> str:
    """Scalars as Go's templates print them (true, <nil>); objects and lists as JSON."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool | dict | list):
        return json.dumps(value)
    return str(value)


def render_object(template: str, obj: Any) -> str:
    """One object through a template of {{.path}} and {{json .path}} (inspect -f)."""
    leftover = _PATH.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise InvalidArgument(f"--format {template!r}: only {{{{.Path}}}} and {{{{json .Path}}}}")

    def one(m: re.Match[str]) -> str:
        value = lookup(obj, m.group(2) or "", template)
        return json.dumps(value) if m.group(1) else _text(value)

    return _PATH.sub(one, template.replace("\\t", "\t").replace("\\n", "\n"))


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
