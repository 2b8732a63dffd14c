"""``AudioGen``: text to sound effects with audiocraft's API.

Example::

    >>> from audiotok.generate import AudioGen
    >>> model = AudioGen.get_pretrained("facebook/audiogen-medium")         # doctest: +SKIP
    >>> model.set_generation_params(duration=5)
    >>> wav = model.generate(["dog barking in an empty hallway"])           # [1, 1, 80000]

See :mod:`audiotok.generate.genmodel` for what matches audiocraft and what does not.
"""

from __future__ import annotations

import os

import torch

from .genmodel import BaseGenModel, default_device
from .load import LoadedLM, load_lm


class AudioGen(BaseGenModel):
    """AudioGen with audiocraft's generation API (see :class:`BaseGenModel`).

    Args:
        name: The model's name.
        loaded: What :func:`~audiotok.generate.load_lm` returns.
        max_duration: Longest one-pass generation, seconds (default: the training segment,
            10 s for audiogen-medium).
    """

    def __init__(self, name: str, loaded: LoadedLM, max_duration: float | None = None) -> None:
        super().__init__(name, loaded, max_duration)
        # audiocraft: `set_generation_params(duration=5)`, its other defaults otherwise
        # (a model with a shorter window, e.g. a test model, starts at its window).
        self.set_generation_params(
            duration=min(5.0, self.max_duration),
            extend_stride=2.0 if self.max_duration > 2.0 else None,
        )

    @classmethod
    def get_pretrained(
        cls,
        name: str | os.PathLike = "facebook/audiogen-medium",
        device: str | torch.device | None = None,
        text_encoder: str | os.PathLike | None = None,
    ) -> AudioGen:
        """Loads an AudioGen model.

        Args:
            name: A registry name (``audiogen-medium``), a Hugging Face id
                (``facebook/audiogen-medium``), or a local audiocraft export.
            device: Where to run; a GPU when one is available if None.
            text_encoder: A local T5 directory (or Hugging Face name) to use instead of the
                one the checkpoint names (``t5-large``).

        Raises:
            ModelNotAvailableError: Unknown name, or weights not available.
            CheckpointError: A checkpoint we can't read.
        """
        loaded = load_lm(name, device=device or default_device(), text_encoder=text_encoder)
        return cls(str(name), loaded)

    def set_generation_params(
        self,
        use_sampling: bool = True,
        top_k: int = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        duration: float = 10.0,
        cfg_coef: float = 3.0,
        two_step_cfg: bool = False,
        extend_stride: float | None = 2,
        seed: int | None = None,
    ) -> None:
        """Sets the generation parameters (audiocraft's, plus ``seed``).

        Their meaning is that of ``MusicGen.set_generation_params``; the defaults are
        AudioGen's: 10 s, windows 2 s apart.

        Raises:
            GenerationError: A value out of range.
        """
        self._set_params(
            use_sampling, top_k, top_p, temperature, duration, cfg_coef, two_step_cfg,
            extend_stride, seed,
        )  # fmt: skip
