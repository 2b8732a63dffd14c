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

from typing import Any

import torch
from torch import Tensor, nn

from .config import CodecConfig
from .quantization import ResidualVectorQuantizer
from .seanet import SEANetDecoder, SEANetEncoder
from .segments import Segment, linear_overlap_add, split_segments

__all__ = ["EncodecModel", "Segment", "linear_overlap_add", "split_segments"]


class EncodecModel(nn.Module):
    """EnCodec: ``[B, C, T]`` audio <-> ``[B, K, F]`` codes (plus per-segment scales).

    Args:
        config: The architecture.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config)
        self.quantizer = ResidualVectorQuantizer(
            config.dimension, config.n_q, config.bins, config.codebook_dim
        )
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
