"""Decoding generated tokens to audio while they are generated, as decoding them at the end.

:func:`decode_as_generated` feeds the codes of each finished timestep, a chunk at a time, to
the codec's stream (:meth:`Codec.streaming`, through
:class:`~audiotok.generate.codec_io.LMStreamDecoder`) and yields the audio that is final, so
that the concatenation of what it yields equals (to float rounding, 1e-5) the offline
``codec.decode`` of all the codes. MusicGen's 32 kHz and AudioGen's 16 kHz codecs are not
causal: their stream emits a frame's audio a few frames late, and the rest at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch


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
