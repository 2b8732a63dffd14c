"""Decoding generated tokens to audio while they are generated, as decoding them at the end.

A :class:`StreamDecoder` takes the codes of successive frames and returns the audio that is
final, so that the concatenation of its outputs equals (to float rounding, 1e-5) the offline
``codec.decode`` of all the codes:

* causal codecs (``codec.can_stream``, such as ``encodec_24khz``): the codec's own streaming
  decoder (:meth:`Codec.streaming`), each frame's audio as soon as the frame is in;
* the others, among them the 32 kHz and 16 kHz EnCodec of MusicGen and AudioGen, which are
  not causal: their decoder looks a few frames ahead (convolutions padded on both sides; its
  LSTM only looks back). :class:`RedecodeStreamDecoder` decodes all the codes so far at each
  push and emits the samples that the next frames can't change any more, those more than
  ``lookahead`` frames before the end. ``lookahead`` is measured once per codec
  (:func:`measure_lookahead`). Each push costs a decode of the whole prefix, so the total
  cost grows with the square of the length: push chunks of frames, not single frames.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from ..codec.streaming import CodecStream

DecodeFn = Callable[[torch.Tensor], torch.Tensor]
"""Offline decode: codes ``[N, K, F]`` -> audio ``[N, C, F * hop]``."""


class StreamDecoder(abc.ABC):
    """Frames of codes in, final audio out."""

    @abc.abstractmethod
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, K, n]`` of the next frames -> the audio ``[N, C, m]`` now final."""

    @abc.abstractmethod
    def end(self) -> torch.Tensor:
        """The audio ``[N, C, m]`` still owed after the last frame."""


class CausalStreamDecoder(StreamDecoder):
    """A causal codec's own stream (``codec.streaming(N, bandwidth)``)."""

    def __init__(self, stream: CodecStream) -> None:
        self.stream = stream

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        return self.stream.decode(codes)

    def end(self) -> torch.Tensor:
        return self.stream.decode_end()


class RedecodeStreamDecoder(StreamDecoder):
    """Re-decodes the prefix at each push and emits what ``lookahead`` frames can't change.

    Args:
        decode: Offline decode of codes ``[N, K, F]`` to ``[N, C, F * hop]``.
        hop: Samples per frame.
        lookahead: Frames after a sample that can change it, or None if unbounded (all
            audio then comes at :meth:`end`).
        channels: ``C``.
    """

    def __init__(self, decode: DecodeFn, hop: int, lookahead: int | None, channels: int) -> None:
        self.decode, self.hop, self.lookahead, self.channels = decode, hop, lookahead, channels
        self.codes: torch.Tensor | None = None
        self.emitted = 0

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes], dim=-1)
        ready = 0 if self.lookahead is None else (self.codes.shape[-1] - self.lookahead) * self.hop
        if ready <= self.emitted:
            return codes.new_zeros(codes.shape[0], self.channels, 0, dtype=torch.float32)
        return self._take(self.decode(self.codes), ready)

    def end(self) -> torch.Tensor:
        if self.codes is None:
            raise RuntimeError("nothing was pushed")
        audio = self.decode(self.codes)
        return self._take(audio, audio.shape[-1])

    def _take(self, audio: torch.Tensor, ready: int) -> torch.Tensor:
        out = audio[..., self.emitted : ready]
        self.emitted = max(self.emitted, ready)
        return out


@torch.no_grad()
def measure_lookahead(
    decode: DecodeFn,
    n_q: int,
    cardinality: int,
    hop: int,
    device: torch.device,
    frames: int = 32,
) -> int | None:
    """Frames after a sample that can change it: how far a decoder looks ahead.

    Decodes random codes of ``frames`` frames, then the same followed by ``frames`` more, and
    finds the first sample where the two differ by more than rounding (1e-6 of the peak).
    How far the convolutions reach does not depend on the input; one frame is added for
    samples at the edge of their reach that these codes happen to change very little.

    Returns:
        The lookahead in frames, or None when nearly every sample differs (a decoder that
        looks at the whole signal).
    """
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, cardinality, (1, n_q, 2 * frames), generator=gen).to(device)
    short = decode(codes[..., :frames])
    full = decode(codes)[..., : short.shape[-1]]
    diff = (short - full).abs().amax(dim=(0, 1))
    changed = torch.nonzero(diff > 1e-6 * float(full.abs().max()))
    if not len(changed):  # a causal decoder
        return 1
    first = int(changed[0])
    if first < hop:
        return None
    return math.ceil((short.shape[-1] - first) / hop) + 1


class Pushable(Protocol):
    """What :func:`decode_as_generated` feeds: a :class:`StreamDecoder` or a wrapper of one."""

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
