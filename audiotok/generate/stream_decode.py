"""Decoding generated tokens to audio while they are generated, as decoding them at the end.

:func:`decode_as_generated` feeds the codes of each finished timestep, a chunk at a time, to
the codec's stream (:meth:`Codec.streaming`, through
:class:`~audiotok.generate.codec_io.LMStreamDecoder`) and yields the audio that is final, so
that the concatenation of what it yields equals (to float rounding, 1e-5) the offline
``codec.decode`` of all the codes. MusicGen's 32 kHz and AudioGen's 16 kHz codecs are not
causal: their stream emits a frame's audio a few frames late, and the rest at the end.
:class:`StreamOutputMixin` gives the generation models their ``generate_stream``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import torch

from .generation import GenerationError
from .windows import plan_windows


class Pushable(Protocol):
    """What :func:`decode_as_generated` feeds (:class:`~.codec_io.LMStreamDecoder`)."""

    def push(self, codes: torch.Tensor) -> torch.Tensor: ...

    def end(self) -> torch.Tensor: ...


def decode_as_generated(
    decoder: Pushable, codes: Iterable[torch.Tensor], chunk: int
) -> Iterator[torch.Tensor]:
    """Decodes codes ``[B, K, n]`` as they come, ``chunk`` frames (or more) at a time.

    Yields:
        Audio ``[B, C, m]``, ``m > 0``; all of it, concatenated, is the offline decode.
    """
    pending: list[torch.Tensor] = []
    for piece in codes:
        pending.append(piece)
        if sum(p.shape[-1] for p in pending) >= chunk:
            audio = decoder.push(torch.cat(pending, dim=-1))
            pending = []
            if audio.shape[-1]:
                yield audio
    tail = [decoder.push(torch.cat(pending, dim=-1))] if pending else []
    audio = torch.cat([*tail, decoder.end()], dim=-1)
    if audio.shape[-1]:
        yield audio


class StreamOutputMixin:
    """``generate_stream`` for :class:`~audiotok.generate.genmodel.BaseGenModel`: audio chunks
    while the tokens are generated (an audiotok addition to audiocraft's API)."""

    def generate_stream(
        self,
        descriptions: Sequence[str | None] | None = None,
        *,
        num_samples: int | None = None,
        prompt: Any = None,
        prompt_sample_rate: int | None = None,
        melody_wavs: Any = None,
        melody_sample_rate: int | None = None,
        progress: bool = False,
        chunk_duration: float = 0.5,
    ) -> Iterator[torch.Tensor]:
        """Generates as ``generate*`` do, yielding audio ``[B, C, n]`` as tokens come.

        The chunks, concatenated, are the audio ``generate*`` would return for these codes
        (to 1e-5); afterwards :attr:`last_codes` holds the codes. Inputs are checked at
        once, generation runs as the iterator is consumed.

        Args:
            descriptions: Texts (as :meth:`generate`), or None with ``num_samples``.
            num_samples: Unconditional samples, when ``descriptions`` is None.
            prompt: Audio to continue, as :meth:`generate_continuation`.
            prompt_sample_rate: Its sample rate.
            melody_wavs: Melodies, as ``MusicGen.generate_with_chroma`` (melody models).
            melody_sample_rate: Their sample rate.
            progress: Show progress.
            chunk_duration: Seconds of tokens between decodes (at least one frame). The
                codecs of MusicGen and AudioGen are not causal: their stream gives a chunk's
                audio a few frames late (see :mod:`.stream_decode`).
        """
        if descriptions is None and num_samples is None and prompt is None:
            raise GenerationError("give descriptions, num_samples or a prompt")
        texts, codes = self._texts_and_prompt(descriptions, num_samples, prompt, prompt_sample_rate)
        melodies = None
        if melody_wavs is not None:
            melodies = self._prepare_melodies(melody_wavs, melody_sample_rate, len(texts))
        if not chunk_duration > 0:
            raise GenerationError(f"chunk_duration must be positive, got {chunk_duration}")
        chunk = max(1, int(chunk_duration * self.frame_rate))
        prompt_len = 0 if codes is None else codes.shape[-1]
        # Checked now, not when iteration starts (a generator runs nothing until then).
        plan_windows(
            self.duration, self.max_duration, self.frame_rate, self.extend_stride, prompt_len
        )
        self._codec_io.stream_decoder(len(texts))
        return self._stream(texts, codes, melodies, progress, chunk)

    def _stream(
        self,
        texts: list[str | None],
        prompt: torch.Tensor | None,
        melodies: list[torch.Tensor | None] | None,
        progress: bool,
        chunk: int,
    ) -> Iterator[torch.Tensor]:
        decoder = self._codec_io.stream_decoder(len(texts))
        yield from decode_as_generated(
            decoder, self._iter_codes(texts, prompt, melodies, progress), chunk
        )
