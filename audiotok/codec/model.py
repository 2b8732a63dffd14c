"""The EnCodec model: SEANet encoder, residual VQ, SEANet decoder, segments and scales.

``EncodecModel`` holds the three networks under the official key prefixes (``encoder.``,
``quantizer.``, ``decoder.``) and implements the two processing modes of the reference:

* one pass (24, 32 and 16 kHz models): the whole signal is encoded at once;
* segments (48 kHz model): 1 s segments starting every 0.99 s are encoded independently,
  each after normalising its loudness (the scale is kept, one per segment), and decoded
  segments are joined by linear overlap-add.

Codes of all segments are laid end to end along the frame axis: a segment of ``n`` samples
gives ``ceil(n / hop)`` frames, so the layout follows from the signal length alone.

Example, 48 kHz, 2.5 s = 120 000 samples, stride 47 520::

    segment 0: samples      0 ..  48 000 -> frames   0 .. 150
    segment 1: samples 47 520 ..  95 520 -> frames 150 .. 300
    segment 2: samples 95 040 .. 120 000 -> frames 300 .. 378  (24 960 samples, 78 frames)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .config import CodecConfig
from .quantization import ResidualVectorQuantizer
from .seanet import SEANetDecoder, SEANetEncoder


@dataclass(frozen=True)
class Segment:
    """Where one segment lies in the signal and in the codes."""

    start: int
    length: int
    first_frame: int
    frames: int


class EncodecModel(nn.Module):
    """EnCodec: ``[B, C, T]`` audio <-> ``[B, K, F]`` codes (plus per-segment scales).

    Args:
        config: The architecture.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config)
        self.quantizer = ResidualVectorQuantizer(config.dimension, config.n_q, config.bins)
        self.decoder = SEANetDecoder(config)
        # Counts load_state_dict calls: weights made under torch.inference_mode() keep no
        # version counter, so caches keyed on the weights (EncodecCodec.fingerprint) need
        # this to see a load that overwrites them in place.
        self.loads = 0

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.loads += 1
        super()._load_from_state_dict(*args, **kwargs)

    def segments(self, length: int) -> list[Segment]:
        """The segments of a signal of ``length`` samples (one for unsegmented models)."""
        cfg = self.config
        return split_segments(length, cfg.hop_length, cfg.segment_length, cfg.segment_stride)

    def num_frames(self, length: int) -> int:
        """Frames ``F`` of the codes of a signal of ``length`` samples."""
        return sum(s.frames for s in self.segments(length))

    def encode(self, x: Tensor, n_q: int) -> tuple[Tensor, Tensor | None]:
        """Encodes audio.

        Args:
            x: Audio ``[B, C, T]`` at the model's rate and channel count.
            n_q: Codebooks to produce.

        Returns:
            Codes ``[B, n_q, F]`` (int64) and scales ``[B, S]`` (one per segment) when the model
            normalises, else None.
        """
        codes, scales = [], []
        for seg in self.segments(x.shape[-1]):
            seg_codes, scale = self.encode_segment(x[..., seg.start : seg.start + seg.length], n_q)
            codes.append(seg_codes)
            if scale is not None:
                scales.append(scale.view(-1, 1))
        return torch.cat(codes, dim=-1), torch.cat(scales, dim=1) if scales else None

    def encode_segment(self, x: Tensor, n_q: int) -> tuple[Tensor, Tensor | None]:
        """Encodes one segment (the whole signal for unsegmented models).

        Args:
            x: Audio ``[B, C, n]``.
            n_q: Codebooks to produce.

        Returns:
            Codes ``[B, n_q, ceil(n / hop)]`` and, when the model normalises, the scales
            ``[B, 1, 1]`` the segment was divided by.
        """
        x, scale = self.normalize(x)
        return self.quantizer.encode(self.encoder(x), n_q), scale

    def normalize(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Divides each segment ``[B, C, n]`` by its RMS ``[B, 1, 1]`` if the model normalises."""
        if not self.config.normalize:
            return x, None
        mono = x.mean(dim=1, keepdim=True)
        scale = 1e-8 + mono.pow(2).mean(dim=2, keepdim=True).sqrt()
        return x / scale, scale

    def decode_segment(self, codes: Tensor, scale: Tensor | None) -> Tensor:
        """One segment's codes ``[B, K, f]`` and scales ``[B]`` (or None) -> ``[B, C, f * hop]``."""
        out = self.decoder(self.quantizer.decode(codes))
        return out if scale is None else out * scale.view(-1, 1, 1)

    def decode(self, codes: Tensor, scales: Tensor | None, length: int) -> Tensor:
        """Decodes codes back to audio.

        Args:
            codes: Codes ``[B, K, F]`` with ``F == num_frames(length)``.
            scales: Scales ``[B, S]`` when the model normalises, else None.
            length: Samples of the original signal.

        Returns:
            Audio ``[B, C, length]``.
        """
        pieces = []
        for i, seg in enumerate(self.segments(length)):
            frames = codes[..., seg.first_frame : seg.first_frame + seg.frames]
            pieces.append(self.decode_segment(frames, None if scales is None else scales[:, i]))
        if len(pieces) == 1 and self.config.segment is None:
            return pieces[0][..., :length]
        return linear_overlap_add(pieces, self.config.segment_stride or 1)[..., :length]


def split_segments(
    length: int, hop: int, segment_length: int | None, segment_stride: int | None
) -> list[Segment]:
    """The segments of a signal of ``length`` samples: every ``segment_stride`` samples one of
    ``segment_length`` (the last one shorter), or the whole signal when unsegmented.

    >>> [(s.start, s.length, s.first_frame, s.frames) for s in split_segments(5, 2, 4, 3)]
    [(0, 4, 0, 2), (3, 2, 2, 1)]
    """
    if segment_length is None or segment_stride is None:
        return [Segment(0, length, 0, math.ceil(length / hop))]
    out: list[Segment] = []
    frame = 0
    for start in range(0, length, segment_stride):
        n = min(segment_length, length - start)
        out.append(Segment(start, n, frame, math.ceil(n / hop)))
        frame += out[-1].frames
    return out


def linear_overlap_add(frames: list[Tensor], stride: int) -> Tensor:
    """Joins overlapping decoded segments with triangular weights.

    Each segment is weighted by a triangle peaking at its middle; the weighted sum is divided
    by the summed weights, so where two segments overlap the output fades linearly from one
    to the other, and where one segment is alone it passes unchanged.

    Args:
        frames: Segments ``[..., L_i]`` starting every ``stride`` samples; all but the last
            have the length of the first.
        stride: Distance between segment starts.

    Returns:
        ``[..., T]``, ``T`` the end of the segment that ends last (float32 at least).
    """
    first = frames[0]
    # The reference's `stride * (n - 1) + len(last)` is shorter than the second-to-last
    # segment's end when the last is a single frame (48 kHz: 47 800 samples); it then fails.
    total = max(i * stride + f.shape[-1] for i, f in enumerate(frames))
    # Weights in float32 at least: in bfloat16 the triangle's ends round to 0 (then 0 / 0).
    dtype = torch.promote_types(first.dtype, torch.float32)
    t = torch.linspace(0, 1, first.shape[-1] + 2, device=first.device, dtype=dtype)[1:-1]
    weight = 0.5 - (t - 0.5).abs()
    out = torch.zeros(*first.shape[:-1], total, device=first.device, dtype=dtype)
    sum_weight = torch.zeros(total, device=first.device, dtype=dtype)
    for i, frame in enumerate(frames):
        n = frame.shape[-1]
        start = i * stride
        out[..., start : start + n] += weight[:n] * frame
        sum_weight[start : start + n] += weight[:n]
    return out / sum_weight
