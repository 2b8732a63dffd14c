"""``EncodecCodec``: the :class:`~audiotok.codec.base.Codec` of every EnCodec-family model."""

from __future__ import annotations

import torch

from ..errors import TokensError
from .base import Codec
from .config import CodecConfig
from .model import EncodecModel


class EncodecCodec(Codec):
    """An EnCodec model behind the tokenizer interface.

    Args:
        model: The network, with its weights loaded.
        model_id: Registry name, or another stable id.
        default_bandwidth: kbps used when ``encode`` gets none; the model's lowest if None.
    """

    def __init__(
        self, model: EncodecModel, model_id: str, default_bandwidth: float | None = None
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
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> EncodecCodec:
        """Moves the weights to ``device``; returns self."""
        self.model.to(device)
        return self

    def num_codebooks(self, bandwidth: float | None = None) -> int:
        return self.config.num_codebooks(self.check_bandwidth(bandwidth))

    def num_frames(self, length: int) -> int:
        return self.model.num_frames(length)

    def _encode(
        self, wav: torch.Tensor, bandwidth: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.encode(wav, self.config.num_codebooks(bandwidth))

    def _decode(
        self, codes: torch.Tensor, scales: torch.Tensor | None, length: int
    ) -> torch.Tensor:
        if self.config.normalize:
            n_segments = len(self.model.segments(length))
            if scales is None or scales.shape[1] != n_segments:
                got = "none" if scales is None else scales.shape[1]
                raise TokensError(
                    f"{self.model_id} needs one scale per segment ({n_segments}), got {got}"
                )
        elif scales is not None:
            raise TokensError(f"{self.model_id} does not normalise, but the tokens carry scales")
        return self.model.decode(codes, scales, length)

    def __repr__(self) -> str:
        return (
            f"EncodecCodec({self.model_id!r}, {self.sample_rate} Hz, {self.channels} ch, "
            f"{self.frame_rate:g} frames/s, {self.cardinality} codes, "
            f"bandwidths {list(self.bandwidths)})"
        )
