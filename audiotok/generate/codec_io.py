"""The codec as a generation LM sees it: codes ``[B, K, F]`` <-> audio ``[B, C, T]``.

The LM reaches the codec only through the tokenizer interface (``Codec.encode`` /
``decode`` / ``streaming``, :class:`~audiotok.Tokens`). Mono models use the codec's codes as
they are. Stereo MusicGen runs the mono codec on each channel and interleaves the codebooks
(audiocraft's ``InterleaveStereoCompressionModel``): LM codes ``[B, 2K, F]`` are
``L0, R0, L1, R1, ...``; here they become ``2B`` codec *rows* (row ``2b`` the left channel of
item ``b``, row ``2b + 1`` its right), decoded in one batch::

    LM codes [B, 2K, F]  --split_stereo_codes-->  rows [2B, K, F]  --codec-->  [2B, 1, T]
                                                                   --view-->   [B, 2, T]
"""

from __future__ import annotations

from typing import Any

import torch

from ..codec.base import Codec
from ..codec.tokens import Tokens
from .generation import GenerationError
from .lm_config import LMConfig
from .patterns import interleave_stereo_codes, split_stereo_codes


class GenerationCodec:
    """Encodes prompts to LM codes and decodes LM codes, stereo interleaving included.

    Args:
        codec: The codec the LM was trained with.
        config: The LM's config (``n_q``, ``channels``, ``stereo_interleave``).
        device: Where the LM's codes live.

    Attributes:
        bandwidth: The codec bandwidth giving at least the LM's codebooks per channel.
    """

    def __init__(self, codec: Codec, config: LMConfig, device: torch.device) -> None:
        if config.stereo_interleave and config.stereo_per_timestep:
            raise GenerationError("per-timestep stereo interleaving is not supported")
        self.codec, self.device = codec, device
        self.stereo = config.stereo_interleave
        self.channels = config.channels
        self.n_q = config.n_q // 2 if self.stereo else config.n_q
        usable = [b for b in codec.bandwidths if codec.num_codebooks(b) >= self.n_q]
        if not usable:
            raise GenerationError(f"the codec has fewer than {self.n_q} codebooks")
        self.bandwidth = usable[0]

    def rows(self, codes: torch.Tensor) -> torch.Tensor:
        """LM codes ``[B, K, F]`` -> codec rows ``[B * C, K / C, F]``."""
        if not self.stereo:
            return codes
        left, right = split_stereo_codes(codes)
        batch, n_q, frames = left.shape
        return torch.stack([left, right], dim=1).reshape(2 * batch, n_q, frames)

    def lm_codes(self, rows: torch.Tensor, batch: int) -> torch.Tensor:
        """Codec rows ``[B * C, K', F]`` -> LM codes ``[B, K, F]``."""
        if not self.stereo:
            return rows
        pairs = rows.reshape(batch, 2, *rows.shape[1:])
        return interleave_stereo_codes(pairs[:, 0], pairs[:, 1])

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio ``[B, C, T]`` at the codec's rate, ``C`` the model's channels -> LM codes."""
        batch, channels, length = wav.shape
        rows = wav.reshape(batch * channels, 1, length)
        tokens = self.codec.encode(
            rows, sample_rate=self.codec.sample_rate, bandwidth=self.bandwidth
        )
        return self.lm_codes(tokens.codes[:, : self.n_q].to(self.device), batch)

    def to_tokens(self, codes: torch.Tensor, length: int | None = None) -> Tokens:
        """LM codes ``[B, K, F]`` -> :class:`~audiotok.Tokens` of the codec (rows as above).

        Args:
            codes: LM codes.
            length: Samples per channel; default ``F * hop``, what decoding gives.
        """
        return self._tokens(self.rows(codes), length)

    def _tokens(self, rows: torch.Tensor, length: int | None = None) -> Tokens:
        length = rows.shape[-1] * self.codec.hop_length if length is None else int(length)
        codec = self.codec
        return Tokens(rows, None, length, codec.sample_rate, self.bandwidth, codec.model_id)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LM codes ``[B, K, F]`` -> audio ``[B, C, F * hop]``, float32."""
        return self.from_rows(self.codec.decode(self._tokens(self.rows(codes))), codes.shape[0])

    def from_rows(self, audio: torch.Tensor, batch: int) -> torch.Tensor:
        """Audio of codec rows ``[B * C, 1, T]`` -> ``[B, C, T]``."""
        return audio.reshape(batch, self.channels, audio.shape[-1])

    def stream_decoder(self, batch: int) -> LMStreamDecoder:
        """A decoder of LM codes as they come: the codec's own stream (:meth:`Codec.streaming`).

        Raises:
            GenerationError: The codec can't stream frame by frame.
        """
        codec = self.codec
        if not codec.can_stream or codec.segments is not None:
            raise GenerationError(
                f"codec {codec.model_id} can't decode frame by frame; use generate() instead"
            )
        return LMStreamDecoder(self, codec.streaming(batch * self.channels, self.bandwidth), batch)


class LMStreamDecoder:
    """A codec stream fed LM codes, giving ``[B, C, n]`` audio.

    Non-causal codecs (MusicGen's and AudioGen's) emit a frame's audio a few frames late:
    their decoder looks ahead (:mod:`audiotok.codec.streaming`).
    """

    def __init__(self, owner: GenerationCodec, stream: Any, batch: int) -> None:
        self.owner, self.stream, self.batch = owner, stream, batch

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """LM codes ``[B, K, n]`` -> the audio ``[B, C, m]`` now final."""
        return self.owner.from_rows(self.stream.decode(self.owner.rows(codes)), self.batch)

    def end(self) -> torch.Tensor:
        """The audio ``[B, C, m]`` still owed."""
        return self.owner.from_rows(self.stream.decode_end(), self.batch)
