"""The tokenizer interface: the one way the rest of audiotok reaches a codec.

Compression, generation and training see a codec only as a :class:`Codec`: audio in,
:class:`~audiotok.codec.tokens.Tokens` out, and back. Subclasses implement ``_encode`` and
``_decode`` on tensors already at the model's rate and channel count; this base class does
the checking and conversion that every codec needs.

Example:
    >>> codec = audiotok.load_codec("encodec_24khz")           # doctest: +SKIP
    >>> tokens = codec.encode(wav, sample_rate=44_100, bandwidth=6.0)
    >>> tokens.codes.shape                                       # [B, K, F]
    torch.Size([1, 8, 750])
    >>> audio = codec.decode(tokens)                             # [B, C, length] at 24 kHz
"""

from __future__ import annotations

import abc
import warnings

import numpy as np
import torch

from ..audio import check_audio, convert_audio
from ..errors import AudioError, TokensError
from .tokens import Tokens


class Codec(abc.ABC):
    """A neural audio codec seen as a tokenizer."""

    model_id: str
    """Registry name of the model, or another stable id for models outside the registry."""

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Sample rate of the audio the model codes, in Hz."""

    @property
    @abc.abstractmethod
    def channels(self) -> int:
        """Channels of the audio the model codes."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Token time steps per second."""

    @property
    @abc.abstractmethod
    def cardinality(self) -> int:
        """Entries per codebook: every code is in ``[0, cardinality)``."""

    @property
    @abc.abstractmethod
    def bandwidths(self) -> tuple[float, ...]:
        """Supported bandwidths in kbps, ascending."""

    @property
    @abc.abstractmethod
    def default_bandwidth(self) -> float:
        """The bandwidth used when none is given."""

    @property
    @abc.abstractmethod
    def hop_length(self) -> int:
        """Samples per frame."""

    @property
    @abc.abstractmethod
    def segments(self) -> tuple[int, int] | None:
        """``(segment_length, segment_stride)`` in samples for segmented models, else None."""

    @property
    @abc.abstractmethod
    def has_scales(self) -> bool:
        """Whether tokens carry one loudness scale per segment."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where the model's weights are."""

    @property
    def can_stream(self) -> bool:
        """Whether :meth:`streaming` works: causal models without segments."""
        return False

    @property
    def entropy_priors(self) -> np.ndarray | None:
        """Static entropy-coder priors ``[K_max, cardinality]`` from the model card, or None.

        Integer counts per codebook, measured on training data; compressed files made with
        them need them to decode.
        """
        return None

    @abc.abstractmethod
    def fingerprint(self) -> bytes:
        """16 bytes identifying the weights (compressed files record it)."""

    @abc.abstractmethod
    def num_codebooks(self, bandwidth: float | None = None) -> int:
        """Codebooks ``K`` used at ``bandwidth`` kbps (the default bandwidth if None)."""

    @abc.abstractmethod
    def num_frames(self, length: int) -> int:
        """Frames ``F`` produced for ``length`` samples at the model's rate."""

    @abc.abstractmethod
    def _encode(
        self, wav: torch.Tensor, bandwidth: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``[B, K, F]`` and scales ``[B, S]`` (or None) of ``wav`` ``[B, C, T]``."""

    @abc.abstractmethod
    def _decode(
        self, codes: torch.Tensor, scales: torch.Tensor | None, length: int
    ) -> torch.Tensor:
        """Audio ``[B, C, length]`` from codes ``[B, K, F]`` and scales ``[B, S]`` or None."""

    def check_bandwidth(self, bandwidth: float | None) -> float:
        """Returns ``bandwidth`` (or the default) if the model supports it, else raises."""
        if bandwidth is None:
            return self.default_bandwidth
        if float(bandwidth) not in self.bandwidths:
            supported = ", ".join(f"{b:g}" for b in self.bandwidths)
            raise AudioError(
                f"{self.model_id} does not support {bandwidth:g} kbps; choose one of {supported}"
            )
        return float(bandwidth)

    def encode(
        self,
        wav: torch.Tensor | np.ndarray,
        sample_rate: int | None = None,
        bandwidth: float | None = None,
    ) -> Tokens:
        """Turns audio into tokens.

        Args:
            wav: Audio ``[C, T]`` or ``[B, C, T]``, float, torch or numpy.
            sample_rate: Rate of ``wav``; when it differs from :attr:`sample_rate` the audio is
                resampled, and its channels are converted to :attr:`channels` (see
                :func:`audiotok.audio.convert_audio` for the policy). None means the model's.
            bandwidth: kbps, one of :attr:`bandwidths`; None for :attr:`default_bandwidth`.

        Returns:
            Tokens with codes ``[B, K, F]`` (``B == 1`` for ``[C, T]`` input) and ``length``
            the number of samples after resampling.

        Raises:
            AudioError: Empty or non-finite audio, bad shape, unsupported bandwidth.
        """
        bandwidth = self.check_bandwidth(bandwidth)
        if isinstance(wav, np.ndarray):
            wav = torch.from_numpy(np.ascontiguousarray(wav))
        check_audio(wav)
        if wav.dim() == 2:
            wav = wav.unsqueeze(0)
        wav = wav.float()
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate != self.sample_rate or wav.shape[1] != self.channels:
            wav = convert_audio(wav, rate, self.sample_rate, self.channels)
        with torch.inference_mode():
            codes, scales = self._encode(wav.to(self.device), bandwidth)
        return Tokens(codes, scales, wav.shape[-1], self.sample_rate, bandwidth, self.model_id)

    def check_tokens(self, tokens: Tokens) -> None:
        """Raises :class:`TokensError` unless this codec can decode ``tokens``."""
        where = f"tokens of {tokens.model_id!r}"
        if tokens.sample_rate != self.sample_rate:
            raise TokensError(
                f"{where} are at {tokens.sample_rate} Hz, "
                f"{self.model_id} codes {self.sample_rate} Hz"
            )
        max_k = self.num_codebooks(self.bandwidths[-1])
        if not 1 <= tokens.num_codebooks <= max_k:
            raise TokensError(
                f"{where} have {tokens.num_codebooks} codebooks; {self.model_id} has {max_k}"
            )
        expected = self.num_frames(tokens.length)
        if tokens.num_frames != expected:
            raise TokensError(
                f"{where} have {tokens.num_frames} frames, "
                f"but {tokens.length} samples make {expected}"
            )
        if tokens.codes.numel() and (
            int(tokens.codes.min()) < 0 or int(tokens.codes.max()) >= self.cardinality
        ):
            raise TokensError(f"{where} have codes outside [0, {self.cardinality})")
        if tokens.model_id != self.model_id:
            warnings.warn(
                f"decoding {where} with {self.model_id!r}; "
                "the audio is garbage unless both share weights",
                stacklevel=3,
            )

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """Turns tokens back into audio.

        Args:
            tokens: Tokens made by this model (or one with the same weights).

        Returns:
            Audio ``[B, C, tokens.length]`` at :attr:`sample_rate`, float32, on :attr:`device`.

        Raises:
            TokensError: The tokens don't fit this model (rate, codebooks, frames, code range).
        """
        self.check_tokens(tokens)
        scales = None if tokens.scales is None else tokens.scales.to(self.device)
        with torch.inference_mode():
            return self._decode(tokens.codes.to(self.device), scales, tokens.length)
