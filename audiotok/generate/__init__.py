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

import importlib
from typing import Any

# name -> the module (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    "LMConfig": ".lm_config",
    "ConditionerConfig": ".lm_config",
    "LMModel": ".lm",
    "LMCache": ".transformer",
    "ConditionTensors": ".conditioners",
    "ConditionProvider": ".conditioners",
    "TextConditioner": ".conditioners",
    "ChromaConditioner": ".conditioners",
    "load_lm": ".load",
    "LoadedLM": ".load",
    "GENERATION_CARDS": ".registry",
    "GenerationCard": ".registry",
    "find_generation_card": ".registry",
    "MusicGen": ".musicgen",
    "AudioGen": ".audiogen",
    "GenerationError": ".generation",
    "SamplingParams": ".generation",
    "TokenGeneration": ".generation",
    "generate_tokens": ".generation",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'audiotok.generate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
