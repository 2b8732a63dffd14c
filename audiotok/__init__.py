"""audiotok: neural audio coding with EnCodec, for compression and for language models.

The public API is imported lazily, so that ``import audiotok`` (and ``audiotok --help``)
does not pay for importing torch:

    >>> import audiotok
    >>> codec = audiotok.load_codec("encodec_24khz")          # doctest: +SKIP
    >>> tokens = codec.encode(wav, sample_rate=sr)           # Tokens, codes [B, K, F]
    >>> audio = codec.decode(tokens)                         # [B, C, length]
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    AudioError,
    AudiotokError,
    CheckpointError,
    DeviceError,
    FormatError,
    ModelNotAvailableError,
    TokensError,
)

__version__ = "0.1.0"

_LAZY = {
    "load_codec": "audiotok.codec.load",
    "Codec": "audiotok.codec.base",
    "CodecConfig": "audiotok.codec.config",
    "Tokens": "audiotok.codec.tokens",
    "read_audio": "audiotok.audio",
    "write_audio": "audiotok.audio_output",
    "convert_audio": "audiotok.audio",
    "audio_write": "audiotok.audio_output",
    "compress": "audiotok.compression",
    "decompress": "audiotok.compression",
    "compress_file": "audiotok.compression",
    "decompress_file": "audiotok.compression",
}

__all__ = [
    "AudioError",
    "AudiotokError",
    "CheckpointError",
    "DeviceError",
    "FormatError",
    "ModelNotAvailableError",
    "TokensError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'audiotok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
