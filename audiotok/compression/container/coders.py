"""The entropy coders by name and by the id a file stores: the one place that knows them all.

A module of its own, above :mod:`.entropy` (the base class) and the coder modules that
subclass it, so that no module imports one that imports it back.
"""

from __future__ import annotations

from ...errors import UnsupportedFormatError
from .adaptive import AdaptiveCoder
from .entropy import EntropyCoder
from .rawpack import RawCoder

CODERS: tuple[type[EntropyCoder], ...] = (RawCoder, AdaptiveCoder)
"""Every coder, in the order of their ids."""


def coder_names() -> tuple[str, ...]:
    """The names of all coders, by id (the CLI's ``--entropy`` choices)."""
    return tuple(c.name for c in CODERS)


def coder_for_id(coder_id: int) -> type[EntropyCoder]:
    """The coder class stored as ``coder_id``; UnsupportedFormatError if there is none."""
    for coder in CODERS:
        if coder.coder_id == coder_id:
            return coder
    raise UnsupportedFormatError(f"unknown entropy coder id {coder_id}")


def coder_for_name(name: str) -> type[EntropyCoder]:
    """The coder class called ``name``; UnsupportedFormatError if there is none."""
    for coder in CODERS:
        if coder.name == name:
            return coder
    raise UnsupportedFormatError(
        f"unknown entropy coder {name!r} (known: {', '.join(coder_names())})"
    )
