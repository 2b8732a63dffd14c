"""``EncodecCodec``: the :class:`~audiotok.codec.base.Codec` of every EnCodec-family model."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..errors import TokensError
from .base import Codec
from .batching import decode_batch, encode_batch
from .config import CodecConfig
from .inference import module_to, tensor_version
from .model import EncodecModel
from .precision import check_precision, precision_context
from .segment_streaming import SegmentStream
from .streaming import CodecStream


class EncodecCodec(Codec):
    """An EnCodec model behind the tokenizer interface.

    Args:
        model: The network, with its weights loaded.
        model_id: Registry name, or another stable id.
        default_bandwidth: kbps used when ``encode`` gets none; the model's lowest if None.
        entropy_priors: Static entropy-coder priors ``[n_q, bins]`` from the model card.
    """

    def __init__(
        self,
        model: EncodecModel,
        model_id: str,
        default_bandwidth: float | None = None,
        entropy_priors: np.ndarray | None = None,
    ) -> None:
        self.model = model.eval()
        self.model_id = model_id
        cfg = model.config
        if default_bandwidth is not None and default_bandwidth not in cfg.target_bandwidths:
            raise ValueError(
                f"default bandwidth {default_bandwidth} not in {cfg.target_bandwidths}"
            )
        self._default_bandwidth = (
            cfg.target_bandwidths[0] if default_bandwidth is None else float(default_bandwidth)
        )
        self._fingerprint: tuple[tuple[int, ...], bytes] | None = None
        if entropy_priors is not None and tuple(entropy_priors.shape) != (cfg.n_q, cfg.bins):
            raise ValueError(f"entropy priors must be [{cfg.n_q}, {cfg.bins}]")
        self._priors = None if entropy_priors is None else np.asarray(entropy_priors, np.uint16)
        self._precision = "fp32"

    @property
    def precision(self) -> str:
        """Inference precision: ``fp32`` (exact, the default), ``tf32``, ``bf16`` or ``fp16``."""
        return self._precision

    def set_precision(self, precision: str) -> EncodecCodec:
        """Chooses the inference precision (see :mod:`audiotok.codec.precision`); returns self.

        Anything but ``fp32`` is faster on GPUs and gives codes that differ from the
        official model's wherever the rounding tips a near tie.

        Raises:
            ValueError: An unknown precision.
            DeviceError: ``fp16`` on a CPU.
        """
        self._precision = check_precision(precision, self.device)
        return self

    def compile(self, **options: object) -> EncodecCodec:
        """Compiles the encoder and decoder with ``torch.compile``; returns self.

        Each run of convolutions between LSTMs is one graph; the LSTMs run uncompiled
        (:meth:`~.seanet._LayerStack.compile_around_lstm` says why). Compilation takes
        seconds to minutes on the first call at each new input shape (``dynamic=True`` by
        default: lengths are symbolic). Batches of different lengths run layer by layer
        (:mod:`.batching`) and so stay uncompiled. Parameter names, and so the fingerprint,
        are unchanged. ``options`` go to ``torch.compile``.
        """
        options = {"dynamic": True, **options}
        self.model.encoder.compile_around_lstm(**options)
        self.model.decoder.compile_around_lstm(**options)
        return self

    @property
    def config(self) -> CodecConfig:
        """The architecture."""
        return self.model.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def cardinality(self) -> int:
        return self.config.bins

    @property
    def bandwidths(self) -> tuple[float, ...]:
        return self.config.target_bandwidths

    @property
    def default_bandwidth(self) -> float:
        return self._default_bandwidth

    @property
    def can_stream(self) -> bool:
        if self.config.segment is not None:
            return True  # by segment
        return not any(isinstance(m, torch.nn.GroupNorm) for m in self.model.modules())

    @property
    def entropy_priors(self) -> np.ndarray | None:
        return self._priors

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def segments(self) -> tuple[int, int] | None:
        cfg = self.config
        return None if cfg.segment_length is None else (cfg.segment_length, cfg.segment_stride)

    @property
    def has_scales(self) -> bool:
        return self.config.normalize

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> EncodecCodec:
        """Moves the weights to ``device``; returns self."""
        module_to(self.model, device)
        return self

    def fingerprint(self) -> bytes:
        """First 16 bytes of the SHA-256 of the weights, identifying them in compressed files.

        Hashes every state-dict entry in order: its name, dtype, shape and float32
        little-endian bytes, so the same weights give the same fingerprint whatever file
        format or device they came from.
        """
        state = self.model.state_dict()
        # In-place updates (load_state_dict, optimiser steps) bump the tensors' versions;
        # weights made under inference mode have none, and count on the model's loads.
        versions = (
            self.model.loads,
            *(v for t in state.values() for v in (tensor_version(t), t.data_ptr())),
        )
        if self._fingerprint is None or self._fingerprint[0] != versions:
            digest = hashlib.sha256()
            for name, tensor in state.items():
                data = tensor.detach().to("cpu", torch.float32).contiguous()
                digest.update(f"{name}:{list(data.shape)};".encode())
                digest.update(data.numpy().astype("<f4", copy=False).tobytes())
            self._fingerprint = (versions, digest.digest()[:16])
        return self._fingerprint[1]

    def streaming(
        self, batch_size: int = 1, bandwidth: float | None = None
    ) -> CodecStream | SegmentStream:
        """A stream for chunk-by-chunk encoding and decoding.

        Unsegmented models stream frame by frame (:class:`~audiotok.codec.streaming.CodecStream`:
        ``with codec.streaming(1, 6.0) as s: codes = s.encode(chunk)``), non-causal ones with a
        few frames of lookahead; segmented ones (48 kHz) segment by segment, with a scale per
        segment (:class:`~audiotok.codec.segment_streaming.SegmentStream`).

        Raises:
            ValueError: An unsegmented model with time-group norm (see :attr:`can_stream`).
        """
        n_q = self.num_codebooks(bandwidth)
        if self.config.segment is not None:
            return SegmentStream(self.model, batch_size, n_q)
        return CodecStream(self.model, batch_size, n_q)

    def num_codebooks(self, bandwidth: float | None = None) -> int:
        return self.config.num_codebooks(self.check_bandwidth(bandwidth))

    def num_frames(self, length: int) -> int:
        return self.model.num_frames(length)

    def _encode(
        self, wav: torch.Tensor, bandwidth: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with precision_context(self._precision, wav.device):
            return self.model.encode(wav, self.config.num_codebooks(bandwidth))

    def _decode(
        self, codes: torch.Tensor, scales: torch.Tensor | None, length: int
    ) -> torch.Tensor:
        self._check_scales(scales, length)
        with precision_context(self._precision, codes.device):
            return self.model.decode(codes, scales, length).float()

    def _check_scales(self, scales: torch.Tensor | None, length: int) -> None:
        if self.config.normalize:
            n_segments = len(self.model.segments(length))
            if scales is None or scales.shape[1] != n_segments:
                got = "none" if scales is None else scales.shape[1]
                raise TokensError(
                    f"{self.model_id} needs one scale per segment ({n_segments}), got {got}"
                )
        elif scales is not None:
            raise TokensError(f"{self.model_id} does not normalise, but the tokens carry scales")

    def _encode_many(
        self, wavs: list[torch.Tensor], bandwidth: float, max_batch: int
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        n_q = self.config.num_codebooks(bandwidth)
        rows = [wav for batch in wavs for wav in batch]
        with precision_context(self._precision, self.device):
            results = encode_batch(self.model, rows, n_q, max_batch)
        return [
            (codes.unsqueeze(0), None if scales is None else scales.unsqueeze(0))
            for codes, scales in results
        ]

    def _decode_many(
        self, items: list[tuple[torch.Tensor, torch.Tensor | None, int]], max_batch: int
    ) -> list[torch.Tensor]:
        for _, scales, length in items:
            self._check_scales(scales, length)
        rows = [
            (codes[0], None if scales is None else scales[0], length)
            for codes, scales, length in items
        ]
        with precision_context(self._precision, self.device):
            audio = decode_batch(self.model, rows, max_batch)
        return [a.unsqueeze(0).float() for a in audio]

    def __repr__(self) -> str:
        return (
            f"EncodecCodec({self.model_id!r}, {self.sample_rate} Hz, {self.channels} ch, "
            f"{self.frame_rate:g} frames/s, {self.cardinality} codes, "
            f"bandwidths {list(self.bandwidths)})"
        )
