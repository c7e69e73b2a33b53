"""Generate Kettle's lean message modules (`*_pb.py`) from a protoc descriptor set.

Development tool only: gen-proto.sh runs protoc (from grpcio-tools, in a throwaway venv) to
turn the .proto files into `descriptors.binpb`, then runs this script, which needs the
`protobuf` package to read that file.  Kettle itself never imports protobuf: the generated
modules use kettle.proto._wire.  tests/ttrpc/test_proto_compat.py regenerates in memory and
fails if the checked-in modules are stale.

Usage: python _gen.py DESCRIPTORS.binpb OUTPUT_DIR
"""

from __future__ import annotations

import keyword
import sys
from pathlib import Path
from typing import Any

# FieldDescriptorProto.Type numbers -> (_wire kind constant, Python type for __init__).
_SCALARS: dict[int, tuple[str, str, str]] = {
    5: ("INT32", "int", "0"),
    3: ("INT64", "int", "0"),
    13: ("UINT32", "int", "0"),
    4: ("UINT64", "int", "0"),
    8: ("BOOL", "bool", "False"),
    14: ("ENUM", "int", "0"),
    9: ("STRING", "str", '""'),
    12: ("BYTES", "bytes", 'b""'),
}
_TYPE_MESSAGE = 11
_RESERVED = frozenset(("FIELDS", "FULL_NAME", "decode", "encode"))
_LABEL_REPEATED = 3


class GenError(Exception):
    """The .proto uses something the lean codec does not support."""


def module_name(proto_path: str) -> str:
    """Module (inside kettle.proto) generated for a .proto file."""
    return Path(proto_path).stem + "_pb"


def generate(file_set: Any) -> dict[str, str]:
    """Map of module name -> Python source for every file in a FileDescriptorSet."""
    owner: dict[str, tuple[str, str]] = {}  # ".pkg.Msg" -> (module, class name)
    for fd in file_set.file:
        prefix = f".{fd.package}." if fd.package else "."
        for msg in fd.message_type:
            owner[prefix + msg.name] = (module_name(fd.name), msg.name)
    return {module_name(fd.name): _file(fd, owner) for fd in file_set.file}


def _py_name(name: str) -> str:
    return name + "_" if keyword.iskeyword(name) else name


def _is_map(field: Any, msg: Any) -> bool:
    if field.type != _TYPE_MESSAGE or field.label != _LABEL_REPEATED:
        return False
    entry = field.type_name.rsplit(".", 1)[-1]
    return any(n.name == entry and n.options.map_entry for n in msg.nested_type)


def _check_map(field: Any, msg: Any) -> None:
    entry = next(n for n in msg.nested_type if n.name == field.type_name.rsplit(".", 1)[-1])
    if [f.type for f in entry.field] != [9, 9]:
        raise GenError(f"{msg.name}.{field.name}: only map<string, string> is supported")


def _file(fd: Any, owner: dict[str, tuple[str, str]]) -> str:
    me = module_name(fd.name)
    imports: set[str] = set()
    lines: list[str] = []
    tables: list[str] = []
    need_enum = bool(fd.enum_type)
    need_seq = False
    need_map = False

    def ref(type_name: str) -> str:
        mod, cls = owner[type_name]
        if mod == me:
            return cls
        imports.add(mod)
        return f"{mod}.{cls}"

    for enum in fd.enum_type:
        lines += ["", "", f"class {enum.name}(enum.IntEnum):"]
        lines += [f"    {v.name} = {v.number}" for v in enum.value]

    for msg in fd.message_type:
        for nested in msg.nested_type:
            if not nested.options.map_entry:
                raise GenError(f"{msg.name}.{nested.name}: nested messages are not supported")
        if msg.enum_type:
            raise GenError(f"{msg.name}: nested enums are not supported")
        full = f"{fd.package}.{msg.name}" if fd.package else msg.name
        fields = sorted(msg.field, key=lambda f: f.number)
        lines += ["", "", f"class {msg.name}(Message):"]
        names = sorted(f'"{_py_name(f.name)}"' for f in fields)
        if not names:
            lines.append("    __slots__ = ()")
        elif len(names) == 1:
            lines.append(f"    __slots__ = ({names[0]},)")
        else:
            # One per line with a trailing comma: the layout ruff format keeps.
            lines += ["    __slots__ = (", *[f"        {n}," for n in names], "    )"]
        lines.append(f'    FULL_NAME = "{full}"')
        params: list[str] = []
        body: list[str] = []
        table: list[str] = []
        for f in fields:
            name = _py_name(f.name)
            if name in _RESERVED:
                raise GenError(f"{msg.name}.{f.name}: clashes with a Message attribute")
            if f.HasField("oneof_index") or f.proto3_optional:
                raise GenError(f"{msg.name}.{f.name}: oneof/optional is not supported")
            if _is_map(f, msg):
                _check_map(f, msg)
                need_map = True
                params.append(f"{name}: Mapping[str, str] | None = None")
                body.append(
                    f"self.{name}: dict[str, str] = {{}} if {name} is None else dict({name})"
                )
                table.append(f'Field({f.number}, "{f.name}", _wire.STRING, _wire.MAP)')
                continue
            if f.type == _TYPE_MESSAGE:
                kind, py, default = "MESSAGE", ref(f.type_name), "None"
                extra = f", {py}"
            elif f.type in _SCALARS:
                kind, py, default = _SCALARS[f.type]
                extra = ""
            else:
                raise GenError(f"{msg.name}.{f.name}: field type {f.type} is not supported")
            if f.label == _LABEL_REPEATED:
                need_seq = True
                params.append(f"{name}: Sequence[{py}] | None = None")
                body.append(f"self.{name} = _wire.new_list({name})")
                table.append(f'Field({f.number}, "{f.name}", _wire.{kind}, _wire.REPEATED{extra})')
            elif f.type == _TYPE_MESSAGE:
                params.append(f"{name}: {py} | None = None")
                body.append(f"self.{name} = {name}")
                table.append(f'Field({f.number}, "{f.name}", _wire.MESSAGE, _wire.SINGULAR{extra})')
            else:
                params.append(f"{name}: {py} = {default}")
                body.append(f"self.{name} = {name}")
                table.append(f'Field({f.number}, "{f.name}", _wire.{kind})')
        if fields:
            lines += ["", "    def __init__(", "        self,", "        *,"]
            lines += [f"        {p}," for p in params]
            lines.append("    ) -> None:")
            lines += [_wrap_call(f"        {b}") for b in body]
            tables += _table(msg.name, table)

    for svc in fd.service:
        full = f"{fd.package}.{svc.name}" if fd.package else svc.name
        const = _snake(svc.name).upper() + "_SERVICE"
        lines += ["", "", f"{const} = Service("]
        lines.append(f'    "{full}",')
        lines.append("    {")
        for m in svc.method:
            if m.client_streaming or m.server_streaming:
                raise GenError(f"{svc.name}.{m.name}: streaming methods are not supported")
            lines.append(f'        "{m.name}": ({ref(m.input_type)}, {ref(m.output_type)}),')
        lines.append("    },")
        lines.append(")")

    head = [
        f"# Generated by _gen.py from {fd.name}; do not edit (run gen-proto.sh).",
        f'"""Messages of proto package `{fd.package}` ({Path(fd.name).name})."""',
        "",
        "from __future__ import annotations",
        "",
    ]
    std: list[str] = []
    if need_enum:
        std.append("import enum")
    if std:
        head += [*std, ""]
    mods = sorted(imports)
    if any(msg.field for msg in fd.message_type):
        mods.insert(0, "_wire")
    if mods:
        head.append(f"from kettle.proto import {', '.join(mods)}")
    names = []
    if any(msg.field for msg in fd.message_type):
        names.append("Field")
    if fd.message_type:
        names.append("Message")
    if fd.service:
        names.append("Service")
    if names:
        head.append(f"from kettle.proto._wire import {', '.join(names)}")
    abc = [n for n, used in (("Mapping", need_map), ("Sequence", need_seq)) if used]
    if abc:
        # Only annotations use these: keep collections.abc off the import path.
        head += ["", "TYPE_CHECKING = False", "if TYPE_CHECKING:"]
        head.append(f"    from collections.abc import {', '.join(abc)}")
    if tables:
        tables.insert(0, "")
    return "\n".join(head + lines + tables) + "\n"


_WIDTH = 100


def _table(cls: str, entries: list[str]) -> list[str]:
    one = f"{cls}.FIELDS = ({entries[0]},)"
    if len(entries) == 1 and len(one) <= _WIDTH:
        return ["", one]
    return ["", f"{cls}.FIELDS = (", *[f"    {e}," for e in entries], ")"]


def _wrap_call(line: str) -> str:
    """Split `x = f(arg)` over three lines when too long, as ruff format does."""
    if len(line) <= _WIDTH or not line.endswith(")"):
        return line
    indent = line[: len(line) - len(line.lstrip())]
    head, _, arg = line[:-1].partition("(")
    return f"{head}(\n{indent}    {arg}\n{indent})"


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    from google.protobuf import descriptor_pb2  # type: ignore[import-untyped, import-not-found, unused-ignore]

    file_set = descriptor_pb2.FileDescriptorSet()
    file_set.ParseFromString(Path(argv[1]).read_bytes())
    out = Path(argv[2])
    for name, source in generate(file_set).items():
        (out / f"{name}.py").write_text(source)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
