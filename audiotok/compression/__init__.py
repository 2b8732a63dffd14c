"""Compression: audio through the codec into the ``.atok`` container, and back.

``encode`` and ``decode`` hold one signal in memory (``decode`` conceals damage when asked);
``files`` compresses and decompresses files atomically, through ``streams`` (block by block,
bounded memory) when they are long; ``channels`` decides what channel count a file records;
``container`` is the on-disk format itself: header, packets, index, entropy coders, and the
``encodec`` package's ``.ecdc``. The codec is reached only through ``Codec`` and ``Tokens``.

    >>> from audiotok.compression import compress, decompress           # doctest: +SKIP
    >>> data = compress(codec, wav, sample_rate=44_100, bandwidth=6.0)
    >>> audio, rate = decompress(data)            # [C, T] at 44.1 kHz, like the input

Names are imported lazily, so that importing the container does not import torch.
"""

from __future__ import annotations

from ..runtime.lazy import lazy_exports

# module -> the names it defines, imported when first used.
_EXPORTS = {
    ".channels": ("coded_channels",),
    ".encode": ("compress", "compress_to"),
    ".decode": ("Decoded", "decode_stream", "decompress"),
    ".files": ("STREAM_SECONDS", "compress_file", "decompress_file", "streams"),
}

__all__ = sorted(name for names in _EXPORTS.values() for name in names)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
