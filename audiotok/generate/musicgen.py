"""``MusicGen``: text (and melody) to music with audiocraft's API.

Example::

    >>> from audiotok.generate import MusicGen
    >>> model = MusicGen.get_pretrained("facebook/musicgen-small")          # doctest: +SKIP
    >>> model.set_generation_params(duration=8, seed=0)
    >>> wav = model.generate(["lo-fi beat with a calm piano"])              # [1, 1, 256000]
    >>> wav, codes = model.generate(["rock"], return_tokens=True)           # codes [1, 4, 400]
    >>> for chunk in model.generate_stream(["jazz"]):                        # [1, 1, n] each
    ...     play(chunk)

See :mod:`audiotok.generate.genmodel` for what matches audiocraft and what does not.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch

from .genmodel import Audio, BaseGenModel, Output, default_device
from .inputs import descriptions_list
from .load import LoadedLM, load_lm

# audiocraft's backward-compatible short names.
_HF_MODEL_CHECKPOINTS_MAP = {
    "small": "facebook/musicgen-small",
    "medium": "facebook/musicgen-medium",
    "large": "facebook/musicgen-large",
    "melody": "facebook/musicgen-melody",
}


class MusicGen(BaseGenModel):
    """MusicGen with audiocraft's generation API (see :class:`BaseGenModel`).

    Args:
        name: The model's name.
        loaded: What :func:`~audiotok.generate.load_lm` returns.
        max_duration: Longest one-pass generation, seconds (default: the training segment,
            30 s for the published models).
    """

    def __init__(self, name: str, loaded: LoadedLM, max_duration: float | None = None) -> None:
        super().__init__(name, loaded, max_duration)
        # audiocraft: `set_generation_params(duration=15)`, its other defaults otherwise
        # (a model with a shorter window, e.g. a test model, starts at its window).
        self.set_generation_params(
            duration=min(15.0, self.max_duration),
            extend_stride=18.0 if self.max_duration > 18.0 else None,
        )

    @classmethod
    def get_pretrained(
        cls,
        name: str | os.PathLike = "facebook/musicgen-melody",
        device: str | torch.device | None = None,
        text_encoder: str | os.PathLike | None = None,
    ) -> MusicGen:
        """Loads a MusicGen model.

        Args:
            name: A registry name (``musicgen-small``...), a Hugging Face id
                (``facebook/musicgen-small``), audiocraft's short names (``small``,
                ``medium``, ``large``, ``melody``; deprecated there too), or a local
                audiocraft export or transformers directory.
            device: Where to run; a GPU when one is available if None.
            text_encoder: For audiocraft exports, a local T5 directory (or Hugging Face name)
                to use instead of the one the checkpoint names.

        Raises:
            ModelNotAvailableError: Unknown name, or weights not available.
            CheckpointError: A checkpoint we can't read.
        """
        if isinstance(name, str) and name in _HF_MODEL_CHECKPOINTS_MAP:
            warnings.warn(
                "MusicGen pretrained model relying on deprecated checkpoint mapping. "
                f"Please use full pre-trained id instead: facebook/musicgen-{name}",
                stacklevel=2,
            )
            name = _HF_MODEL_CHECKPOINTS_MAP[name]
        loaded = load_lm(name, device=device or default_device(), text_encoder=text_encoder)
        return cls(str(name), loaded)

    def set_generation_params(
        self,
        use_sampling: bool = True,
        top_k: int = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        duration: float = 30.0,
        cfg_coef: float = 3.0,
        two_step_cfg: bool = False,
        extend_stride: float | None = 18,
        seed: int | None = None,
    ) -> None:
        """Sets the generation parameters (audiocraft's, plus ``seed``).

        Args:
            use_sampling: Sample; False takes the most likely token (greedy).
            top_k: Sample among the ``top_k`` most likely tokens (0: all).
            top_p: Sample from the smallest set of mass ``top_p``; 0 uses ``top_k``.
            temperature: Softmax temperature.
            duration: Seconds to generate; longer than :attr:`max_duration` generates by
                windows ``extend_stride`` seconds apart (see :mod:`.windows`).
            cfg_coef: Classifier-free guidance coefficient.
            two_step_cfg: Guidance by two forward passes instead of one doubled batch (as
                in audiocraft, that path guides with the model's configured coefficient).
            extend_stride: Seconds between windows of extended generation; below
                :attr:`max_duration` (checked when ``duration`` needs it).
            seed: Every call draws from ``torch.Generator().manual_seed(seed)``, so the same
                seed gives the same output; None draws from torch's global RNG (audiocraft).

        Raises:
            GenerationError: A value out of range.
        """
        self._set_params(
            use_sampling, top_k, top_p, temperature, duration, cfg_coef, two_step_cfg,
            extend_stride, seed,
        )  # fmt: skip

    def generate_with_chroma(
        self,
        descriptions: Sequence[str | None],
        melody_wavs: Audio | Sequence[Audio | None],
        melody_sample_rate: int,
        progress: bool = False,
        return_tokens: bool = False,
    ) -> Output:
        """Text and melody to music (MusicGen-melody models).

        Args:
            descriptions: One text per sample (None: no text).
            melody_wavs: ``[B, C, T]``, ``[C, T]`` for one sample, or a list of ``[C, T]``
                (None: no melody for that sample). See :mod:`.melody` for how the chroma is
                computed, and how it differs from audiocraft (no stem separation).
            melody_sample_rate: Their sample rate.
            progress: Show progress.
            return_tokens: Also return the codes.

        Returns:
            Audio ``[B, C, T]``, and codes ``[B, K, F]`` with ``return_tokens``.

        Raises:
            GenerationError: Not a melody model, or as many melodies as descriptions.
        """
        texts = descriptions_list(descriptions)
        melodies = self._prepare_melodies(melody_wavs, melody_sample_rate, len(texts))
        return self._output(self._run(texts, None, melodies, progress), return_tokens)
