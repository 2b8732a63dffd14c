"""Package names imported when first used, so that importing a package costs nothing.

``import audiotok`` (and ``audiotok --help``) must not import torch; packages that re-export
names from modules that do use :func:`lazy_exports` for their ``__getattr__`` and ``__dir__``
(PEP 562), e.g.::

    __getattr__, __dir__ = lazy_exports(__name__, {".encode": ("compress", "compress_to")})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, tuple[str, ...]], listed: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for names defined in its modules.

    Args:
        package: The package's ``__name__``.
        exports: Module (relative to ``package``, or absolute) -> the names it defines.
        listed: More names ``dir()`` shows (those the package defines itself).
    """
    table = {name: module for module, names in exports.items() for name in names}
    names = sorted({*table, *listed})

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
