"""audiotok: neural audio coding with EnCodec, for compression and for language models.

The public API is imported lazily, so that ``import audiotok`` (and ``audiotok --help``)
does not pay for importing torch:

    >>> import audiotok
    >>> codec = audiotok.load_codec("encodec_24khz")          # doctest: +SKIP
    >>> tokens = codec.encode(wav, sample_rate=sr)           # Tokens, codes [B, K, F]
    >>> audio = codec.decode(tokens)                         # [B, C, length]
"""

from __future__ import annotations

from .errors import (
    AudioError,
    AudiotokError,
    CheckpointError,
    DeviceError,
    FormatError,
    ModelNotAvailableError,
    TokensError,
)
from .runtime.lazy import lazy_exports

__version__ = "0.1.0"

# module -> the names it defines, imported when first used.
_EXPORTS = {
    "audiotok.codec.load": ("load_codec",),
    "audiotok.codec.base": ("Codec",),
    "audiotok.codec.config": ("CodecConfig",),
    "audiotok.codec.tokens": ("Tokens",),
    "audiotok.audio.read": ("read_audio", "convert_audio"),
    "audiotok.audio.write": ("write_audio", "audio_write"),
    "audiotok.compression.encode": ("compress",),
    "audiotok.compression.decode": ("decompress",),
    "audiotok.compression.files": (
        "compress_file",
        "decompress_file",
        "encode_file",
        "decode_tokens_file",
    ),
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
    *(name for names in _EXPORTS.values() for name in names),
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
