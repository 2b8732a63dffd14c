"""The codec: the network, running it, and the tokenizer interface in front of both.

Everything outside this package reaches a model through :func:`load_codec`, :class:`Codec` and
:class:`Tokens`; the layers are internal. The network: ``conv``, ``lstm``, ``seanet`` (encoder
and decoder), ``quantization`` (residual VQ), ``model`` (``EncodecModel``, whose parameter names
equal the official checkpoints' keys), ``segments`` (the 48 kHz model's layout and
overlap-add). Running it: ``encodec`` (``EncodecCodec``, the :class:`Codec` of every EnCodec
model), ``streaming`` and ``segment_streaming`` (block by block, equal to one pass),
``batching``, ``precision``, ``inference``; ``onnx_export`` (with ``onnx_stream_export``,
``onnx_vq``) writes it as ONNX graphs, which ``onnx_runtime`` and ``onnx_stream`` run with
numpy arrays (``arrays``: a codec's tokens and audio are torch's or numpy's). ``load``
dispatches to ``torch_load`` or to an ONNX export. Which models exist and how their
checkpoints are read is :mod:`audiotok.zoo`'s; training is :mod:`audiotok.train`'s. Names are
imported lazily, and nothing on the onnx backend's path imports torch: the model cards (and
``audiotok models``) are read, and exported codecs run, without it.
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
