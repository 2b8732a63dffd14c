"""Generation: the transformer language model of MusicGen and AudioGen, and its conditioning.

The LM predicts codec tokens (``[B, K, S]``, one stream per codebook) conditioned on text
(a T5 encoder) and, for MusicGen-melody, on a chromagram. It reaches audio only through the
codec's tokenizer interface (:func:`audiotok.load_codec`). Names are imported lazily, so
that importing this package does not import torch or transformers.

    >>> from audiotok.generate import load_lm
    >>> lm, conditioner, codec, config = load_lm("musicgen-small")     # doctest: +SKIP
    >>> condition = conditioner(["lo-fi beat", None])                   # doctest: +SKIP
    >>> logits = lm(codes, condition)                                   # [B, K, S, card]

audiocraft's generation API (``MusicGen``, ``AudioGen``) is built on them:

    >>> from audiotok.generate import MusicGen
    >>> model = MusicGen.get_pretrained("facebook/musicgen-small")      # doctest: +SKIP
    >>> model.set_generation_params(duration=8)
    >>> wav = model.generate(["lo-fi beat"])                            # [1, 1, 256000]
"""

from __future__ import annotations

from ..runtime.lazy import lazy_exports

# module -> the names it defines, imported when first used.
_EXPORTS = {
    ".lm_config": ("LMConfig", "ConditionerConfig"),
    ".lm": ("LMModel",),
    ".transformer": ("LMCache",),
    ".conditioners": (
        "ConditionTensors",
        "ConditionProvider",
        "TextConditioner",
        "ChromaConditioner",
    ),
    ".load": ("load_lm", "LoadedLM"),
    "..zoo.lm_cards": ("GENERATION_CARDS", "GenerationCard", "find_generation_card"),
    ".musicgen": ("MusicGen",),
    ".audiogen": ("AudioGen",),
    ".generation": ("GenerationError", "SamplingParams", "TokenGeneration", "generate_tokens"),
}

__all__ = sorted(name for names in _EXPORTS.values() for name in names)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
