"""Checks and normalises what users pass to the generation API (one-line errors)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..audio.read import check_audio
from ..errors import AudioError
from .generation import GenerationError


def descriptions_list(descriptions: Sequence[str | None]) -> list[str | None]:
    """The descriptions as a non-empty list of strings or None (no text)."""
    if isinstance(descriptions, str):
        raise GenerationError("descriptions must be a list of strings, not one string")
    if not isinstance(descriptions, Sequence):
        raise GenerationError(
            f"descriptions must be a list of strings, not {type(descriptions).__name__}"
        )
    texts = list(descriptions)
    if not texts:
        raise GenerationError("descriptions is empty: give at least one (None: no text)")
    bad = [t for t in texts if t is not None and not isinstance(t, str)]
    if bad:
        raise GenerationError(f"descriptions must be strings or None, got {type(bad[0]).__name__}")
    return texts


def unconditional_list(num_samples: Any) -> list[str | None]:
    """``[None] * num_samples`` for a positive integer ``num_samples``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise GenerationError(f"num_samples must be a positive integer, got {num_samples!r}")
    return [None] * num_samples


def check_rate(sample_rate: Any, what: str) -> int:
    """A positive integer sample rate."""
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int | float)
        or sample_rate <= 0
    ):
        raise AudioError(f"{what} must be a positive sample rate, got {sample_rate!r}")
    return int(sample_rate)


def audio_batch(wav: Any, what: str) -> torch.Tensor:
    """``[B, C, T]`` float audio from a tensor or array ``[B, C, T]`` or ``[C, T]``."""
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    if not isinstance(wav, torch.Tensor) or wav.dim() not in (2, 3):
        shape = list(getattr(wav, "shape", []))
        raise AudioError(f"the {what} must be audio [B, C, T] or [C, T], got shape {shape}")
    wav = wav[None] if wav.dim() == 2 else wav
    check_audio(wav, what)
    return wav.float()


def melody_list(melody_wavs: Any, batch: int) -> list[Any]:
    """One melody ``[C, T]`` (or None) per sample, from ``[B, C, T]``, ``[C, T]`` or a list."""
    if isinstance(melody_wavs, np.ndarray | torch.Tensor):
        melodies: list[Any] = list(audio_batch(melody_wavs, "melody"))
    else:
        melodies = list(melody_wavs)
    if len(melodies) != batch:
        raise GenerationError(f"{len(melodies)} melodies for {batch} descriptions")
    return melodies


def _number(name: str, value: Any, integer: bool = False) -> None:
    """Raises unless ``value`` is a real number (an integer if ``integer``), not a bool."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise GenerationError(f"{name} must be {what}, got {value!r}")


def check_seed(seed: Any) -> int | None:
    """``seed`` as an int, or None."""
    if seed is not None:
        _number("seed", seed, integer=True)
        if not -(2**63) <= seed < 2**64:  # what torch.manual_seed takes
            raise GenerationError(f"seed must be in [-2**63, 2**64), got {seed}")
    return None if seed is None else int(seed)


MAX_GENERATION_SECONDS = 3600.0
"""The longest generation taken: its tokens and audio are held in memory (an hour of 32 kHz
stereo is 0.9 GB of float32), and its windows planned at the start (``-d 1e9`` planned 55
million and grew past 15 GB before the first step). Longer audio: generate in parts, each
continuing the last (``--continue``)."""


def check_durations(duration: float, extend_stride: float | None, max_duration: float) -> None:
    """Raises unless ``duration`` is positive, at most :data:`MAX_GENERATION_SECONDS`, and,
    when it is more than ``max_duration``, ``0 < extend_stride < max_duration`` (audiocraft
    checks the stride always)."""
    _number("duration", duration)
    if extend_stride is not None:
        _number("extend_stride", extend_stride)
    if not duration > 0 or not np.isfinite(duration):
        raise GenerationError(f"duration must be positive, got {duration}")
    if duration > MAX_GENERATION_SECONDS:
        raise GenerationError(
            f"duration: at most {MAX_GENERATION_SECONDS:g} s in one generation, got "
            f"{duration:g}; generate in parts, each continuing the last"
        )
    if extend_stride is not None and not extend_stride > 0:
        raise GenerationError(f"extend_stride must be positive, got {extend_stride}")
    if duration > max_duration and not 0 < (extend_stride or 0) < max_duration:
        raise GenerationError(
            f"generating {duration:g} s needs extend_stride below max_duration "
            f"({max_duration:g} s), got {extend_stride}"
        )


MAX_CFG_COEF = 1e6
"""The largest classifier-free guidance coefficient taken: logits of float32 models times
this stay far from overflow (1e40 gave inf logits and a traceback in sampling)."""


def generation_params(
    use_sampling: bool,
    top_k: int,
    top_p: float,
    temperature: float,
    cfg_coef: float,
    two_step_cfg: bool,
) -> dict[str, Any]:
    """The sampling settings, checked, under audiocraft's names (``generation_params``)."""
    _number("top_k", top_k, integer=True)
    for name, value in (("top_p", top_p), ("temperature", temperature), ("cfg_coef", cfg_coef)):
        _number(name, value)
    if top_k < 0 or not 0 <= top_p <= 1 or not 0 <= temperature < math.inf:
        raise GenerationError(
            f"need top_k >= 0, 0 <= top_p <= 1 and temperature >= 0 "
            f"(got {top_k}, {top_p}, {temperature})"
        )
    if not abs(cfg_coef) <= MAX_CFG_COEF:  # NaN included
        # Guided logits are uncond + (cond - uncond) * cfg_coef: past this they overflow.
        raise GenerationError(
            f"cfg_coef: at most {MAX_CFG_COEF:g} either way (1 to 10 is usual), got {cfg_coef}"
        )
    return {
        "use_sampling": bool(use_sampling),
        "temp": float(temperature),
        "top_k": int(top_k),
        "top_p": float(top_p),
        "cfg_coef": float(cfg_coef),
        "two_step_cfg": bool(two_step_cfg),
    }
