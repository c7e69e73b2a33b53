"""Package attributes imported on first use (PEP 562), for packages whose callers each need
only part of them: every kettle-runtime, shim and kctl start would otherwise pay for all."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def attributes(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for package: name -> the module (absolute) that defines it."""

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import sys

        __import__(module)
        return getattr(sys.modules[module], name)

    return __getattr__
