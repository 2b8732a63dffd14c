"""Streaming for segmented models (48 kHz): a segment's codes as soon as its samples are in.

The 48 kHz model is not causal, so it can't stream frame by frame; but it codes 1 s segments
(starting every 0.99 s) independently, each with its own loudness scale. A
:class:`SegmentStream` buffers audio until a segment is complete, encodes it exactly as the
offline path does (same shapes, same operations: codes and scales bit-identical), and on the
way back overlap-adds decoded segments, emitting each sample once no later segment overlaps
it, with the same additions in the same order as :func:`~audiotok.codec.model.linear_overlap_add`.

Latency: one segment (1 s) plus compute.

Example:
    >>> with codec.streaming(batch_size=1, bandwidth=6.0) as stream:  # doctest: +SKIP
    ...     for chunk in chunks:                                   # [B, C, n], any n
    ...         for codes, scale in stream.encode(chunk):          # [B, K, f], [B]
    ...             audio = stream.decode(codes, scale)            # [B, C, m], m >= 0
    ...     for codes, scale in stream.encode_end():               # the last segments
    ...         audio = stream.decode(codes, scale)
    ...     audio = stream.decode_end()                            # what is still owed
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import TokensError
from .model import EncodecModel
from .precision import exact_inference
from .stream_checks import StreamGuard


class SegmentStream:
    """Segment-by-segment encoding and decoding with a segmented model; see the module doc.

    Args:
        model: The network (``EncodecModel`` with ``segment`` set).
        batch_size: Signals streamed in parallel.
        num_codebooks: Codebooks ``K`` to produce.
    """

    def __init__(self, model: EncodecModel, batch_size: int, num_codebooks: int) -> None:
        cfg = model.config
        if cfg.segment_length is None or cfg.segment_stride is None:
            raise ValueError("segment streaming needs a segmented model (such as encodec_48khz)")
        self.model, self.num_codebooks = model, num_codebooks
        self.segment_length, self.stride = cfg.segment_length, cfg.segment_stride
        self._segment_frames = -(-cfg.segment_length // cfg.hop_length)
        self.device = device = next(model.parameters()).device
        self.guard = StreamGuard(batch_size, cfg.channels, cfg.n_q, cfg.bins, device)
        self._audio = torch.zeros(batch_size, cfg.channels, 0, device=device)
        # Decoding: the overlap-add sums from sample `_emitted` on, and the next segment's start.
        self._sum = torch.zeros(batch_size, cfg.channels, 0, device=device)
        self._weight = torch.zeros(0, device=device)
        self._emitted = self._next_start = 0
        self._triangle: Tensor | None = None

    def __enter__(self) -> SegmentStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.guard.closed = True

    def _encode_segment(self, chunk: Tensor) -> tuple[Tensor, Tensor | None]:
        codes, scales = self.model.encode_segment(chunk, self.num_codebooks)
        return codes, None if scales is None else scales.view(-1)

    def encode(self, audio: Tensor) -> list[tuple[Tensor, Tensor | None]]:
        """Audio ``[B, C, n]`` (any ``n``) -> ``(codes [B, K, f], scales [B])`` per completed
        segment (scales None for models that don't normalise)."""
        self.guard.check_open("encode")
        self._audio = torch.cat([self._audio, self.guard.chunk(audio)], dim=-1)
        out = []
        with exact_inference(self.device):
            while self._audio.shape[-1] >= self.segment_length:
                out.append(self._encode_segment(self._audio[..., : self.segment_length]))
                self._audio = self._audio[..., self.stride :]
        return out

    def encode_end(self) -> list[tuple[Tensor, Tensor | None]]:
        """The segments of the samples still buffered, shorter ones included.

        Together with what :meth:`encode` returned, these are the segments of
        ``model.segments(T)`` for the ``T`` samples fed: one starts every ``stride`` samples
        while any sample is left, even inside the previous segment's span.
        """
        self.guard.check_open("encode")
        self.guard.encode_ended = True
        out = []
        with exact_inference(self.device):
            while self._audio.shape[-1] > 0:
                out.append(self._encode_segment(self._audio[..., : self.segment_length]))
                self._audio = self._audio[..., self.stride :]
        return out

    def decode(self, codes: Tensor, scales: Tensor | None) -> Tensor:
        """One segment's ``codes [B, K, f]`` and ``scales [B]`` -> the audio now final
        ``[B, C, m]`` (the samples no later segment overlaps)."""
        self.guard.check_open("decode")
        codes = self.guard.codes(codes)
        if codes.shape[-1] > self._segment_frames:  # the overlap-add would lose its place
            raise TokensError(
                f"one segment at a time: {codes.shape[-1]} frames given, a segment has at most "
                f"{self._segment_frames}"
            )
        scales = self.guard.scales(scales, self.model.config.normalize)
        with exact_inference(self.device):
            frames = self.model.decode_segment(codes, scales)
            if self._triangle is None:
                # Offline, the weights span the first segment's decoded length.
                t = torch.linspace(0, 1, frames.shape[-1] + 2, device=frames.device)[1:-1]
                self._triangle = 0.5 - (t - 0.5).abs()
            start = self._next_start - self._emitted
            n = frames.shape[-1]
            end = start + n
            if end > self._sum.shape[-1]:
                grow = end - self._sum.shape[-1]
                self._sum = torch.nn.functional.pad(self._sum, (0, grow))
                self._weight = torch.nn.functional.pad(self._weight, (0, grow))
            self._sum[..., start:end] += self._triangle[:n] * frames
            self._weight[start:end] += self._triangle[:n]
            self._next_start += self.stride
            return self._emit(self._next_start - self._emitted)

    def decode_end(self) -> Tensor:
        """All audio still owed; trim the whole stream to the signal's length."""
        self.guard.check_open("decode")
        self.guard.decode_ended = True
        with exact_inference(self.device):
            return self._emit(self._sum.shape[-1])

    def _emit(self, n: int) -> Tensor:
        n = min(n, self._sum.shape[-1])
        out = self._sum[..., :n] / self._weight[:n]
        self._sum, self._weight = self._sum[..., n:], self._weight[n:]
        self._emitted += n
        return out
