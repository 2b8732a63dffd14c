"""The codec core and the tokenizer interface.

Everything outside this package reaches a model through :func:`load_codec`, :class:`Codec`
and :class:`Tokens`; the layers (SEANet, quantizer) are internal. Names are imported lazily so
that the registry (and ``audiotok models``) can be read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Codec": ".base",
    "CodecConfig": ".config",
    "EncodecCodec": ".encodec",
    "load_codec": ".load",
    "CARDS": ".registry",
    "ModelCard": ".registry",
    "find_card": ".registry",
    "Tokens": ".tokens",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'audiotok.codec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
