"""The codec: the network, running it, and the tokenizer interface in front of both.

Everything outside this package reaches a model through :func:`load_codec`, :class:`Codec` and
:class:`Tokens`; the layers are internal. The network: ``conv``, ``lstm``, ``seanet`` (encoder
and decoder), ``quantization`` (residual VQ), ``model`` (``EncodecModel``, whose parameter names
equal the official checkpoints' keys). Running it: ``encodec`` (``EncodecCodec``, the
:class:`Codec` of every EnCodec model), ``streaming`` and ``segment_streaming`` (block by block,
equal to one pass), ``batching``, ``precision``, ``inference``; ``onnx_export`` writes it as
ONNX graphs. Which models exist and how their checkpoints are read is :mod:`audiotok.zoo`'s;
training is :mod:`audiotok.train`'s. Names are imported lazily, so that the model cards (and
``audiotok models``) can be read without importing torch.
"""

from __future__ import annotations

from ..runtime.lazy import lazy_exports

# module -> the names it defines, imported when first used.
_EXPORTS = {
    ".base": ("Codec",),
    ".config": ("CodecConfig",),
    ".encodec": ("EncodecCodec",),
    ".load": ("load_codec",),
    "..zoo.codec_cards": ("CARDS", "ModelCard", "find_card"),
    ".tokens": ("Tokens",),
}

__all__ = sorted(name for names in _EXPORTS.values() for name in names)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
