"""MusicGen-melody's chroma condition, prepared as audiocraft does at inference.

audiocraft's ``MusicGen._prepare_tokens_and_attributes`` gives every row a waveform: the
melody (converted to the model's rate), or, for a row without one, a *null* waveform of one
zero sample. Its ``ConditioningProvider`` then averages channels and zero-pads every row to
the longest (``_collate_wavs``); ``ChromaStemConditioner`` extracts a chromagram (a one-hot
of the strongest pitch class per 128 ms frame) and, with ``match_len_on_eval`` (off in
audiocraft's training config ``chroma2music.yaml``, switched on with masking off by
``MusicGen.get_pretrained`` for inference, as in transformers' port and here), truncates or
tiles it to the training length ``chroma_len`` (235 frames for 30 s), with every frame
counted (no mask). So:

* a row without a melody, and every row of the null condition of classifier-free guidance,
  becomes the chroma of silence: bin 0 in every frame (the argmax of an all-zero frame);
* a melody shorter than the longest in its batch gets silent frames at its end before
  tiling, exactly as audiocraft's padding gives it.

Extended generation (longer than the model's window) tiles each melody in time and shifts it
with the windows: window ``w`` sees ``melody[(p0 + i) % len]`` for
``i < max_duration * sample_rate``, ``p0 = int(time_offset * sample_rate)``
(audiocraft's ``MusicGen._generate_tokens``).

Deliberate difference: audiocraft first separates the melody's stems with demucs
(``htdemucs``) and keeps vocals + other, so that drums and bass don't dominate the chroma;
audiotok has no demucs and computes the chroma of the waveform as given. For audiocraft's
behaviour pass a stem without drums and bass. (transformers' MusicGen-melody does the same
as audiotok.)

Example::

    >>> melody = MelodyConditioning(spec, segment_duration=30.0, sample_rate=32000)
    >>> melody.chroma([wav, None]).shape          # [B, chroma_len, n_chroma]   # doctest: +SKIP
    torch.Size([2, 235, 12])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..audio.read import check_audio, convert_audio
from ..errors import AudioError
from .chroma import ChromaExtractor
from .lm_config import ConditionerConfig


class MelodyConditioning:
    """The chromagrams a MusicGen-melody LM is conditioned on.

    Args:
        spec: The ``chroma_stem`` conditioner's config.
        segment_duration: The LM's training segment, seconds: sets ``chroma_len``.
        sample_rate: The model's sample rate (the melodies are converted to it).
        device: Where to compute.
    """

    def __init__(
        self,
        spec: ConditionerConfig,
        segment_duration: float,
        sample_rate: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.sample_rate = sample_rate
        self.device = torch.device(device)
        self.extractor = ChromaExtractor(
            spec.sample_rate or sample_rate,
            n_chroma=spec.n_chroma,
            radix2_exp=spec.radix2_exp,
            argmax=spec.argmax,
        ).to(self.device)
        if spec.chroma_length is not None:  # the checkpoint's own (transformers' configs)
            self.chroma_len = int(spec.chroma_length)
            return
        # audiocraft's `_get_chroma_len`: the chroma of a silent training segment.
        with torch.no_grad():
            length = int(self.extractor.sample_rate * segment_duration)
            self.chroma_len = self.extractor(torch.zeros(1, length, device=self.device)).shape[1]

    def prepare(
        self, wavs: Sequence[torch.Tensor | np.ndarray | None], sample_rate: int
    ) -> list[torch.Tensor | None]:
        """Melodies ``[C, T]`` (None: no melody for that row) as mono ``[T']`` at the model's
        rate, on the device."""
        out: list[torch.Tensor | None] = []
        for i, wav in enumerate(wavs):
            if wav is None:
                out.append(None)
                continue
            if isinstance(wav, np.ndarray):
                wav = torch.from_numpy(np.ascontiguousarray(wav))
            if not isinstance(wav, torch.Tensor) or wav.dim() != 2:
                shape = list(getattr(wav, "shape", []))
                raise AudioError(f"melody {i}: expected a waveform [C, T], got shape {shape}")
            check_audio(wav, f"melody {i}")
            mono = convert_audio(wav.float(), int(sample_rate), self.sample_rate, 1)
            out.append(mono[0].to(self.device))
        return out

    @torch.no_grad()
    def chroma(
        self,
        melodies: Sequence[torch.Tensor | None],
        window: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """The chromagrams ``[B, chroma_len, n_chroma]`` of a batch of prepared melodies.

        Args:
            melodies: Mono ``[T_i]`` at the model's rate (from :meth:`prepare`), or None for a
                row without melody (the null condition).
            window: ``(time_offset, max_duration)`` in seconds in extended generation: each
                melody is tiled from ``time_offset`` for ``max_duration``; None otherwise.
        """
        rows = []
        for melody in melodies:
            if melody is None or melody.shape[-1] == 0:
                rows.append(torch.zeros(1, device=self.device))  # audiocraft's null wav
            elif window is not None:
                start = int(window[0] * self.sample_rate)
                positions = torch.arange(start, start + int(window[1] * self.sample_rate))
                rows.append(melody[positions.to(melody.device) % melody.shape[-1]])
            else:
                rows.append(melody)
        length = max(r.shape[-1] for r in rows)
        batch = torch.stack([F.pad(r, (0, length - r.shape[-1])) for r in rows])[:, None]
        chroma = self.extractor(batch, sample_rate=self.sample_rate)  # [B, frames, n_chroma]
        frames = chroma.shape[1]
        if frames < self.chroma_len:
            chroma = chroma.repeat(1, math.ceil(self.chroma_len / frames), 1)
        return chroma[:, : self.chroma_len]

    def null(self, batch: int) -> torch.Tensor:
        """The chromagram ``[batch, chroma_len, n_chroma]`` of rows without melody."""
        return self.chroma([None] * batch)
