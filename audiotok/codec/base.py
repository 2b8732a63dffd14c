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
from collections.abc import Sequence

import numpy as np
import torch

from ..audio.read import check_audio, convert_audio
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
        """Whether :meth:`streaming` works (frame by frame, or by segment for segmented models)."""
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

    def _encode_many(
        self, wavs: list[torch.Tensor], bandwidth: float, max_batch: int
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Codes ``[1, K, F_i]`` and scales ``[1, S_i]`` (or None) of each ``[1, C, T_i]``.

        One by one here; codecs that can batch override it.
        """
        return [self._encode(wav, bandwidth) for wav in wavs]

    def _decode_many(
        self, items: list[tuple[torch.Tensor, torch.Tensor | None, int]], max_batch: int
    ) -> list[torch.Tensor]:
        """Audio ``[1, C, length_i]`` of each ``(codes [1, K, F_i], scales, length_i)``."""
        return [self._decode(codes, scales, length) for codes, scales, length in items]

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
                :func:`audiotok.audio.read.convert_audio` for the policy). None means the model's.
            bandwidth: kbps, one of :attr:`bandwidths`; None for :attr:`default_bandwidth`.

        Returns:
            Tokens with codes ``[B, K, F]`` (``B == 1`` for ``[C, T]`` input) and ``length``
            the number of samples after resampling.

        Raises:
            AudioError: Empty or non-finite audio, bad shape, unsupported bandwidth.
        """
        bandwidth = self.check_bandwidth(bandwidth)
        wav = self._prepare(wav, sample_rate)
        with torch.inference_mode():
            codes, scales = self._encode(wav.to(self.device), bandwidth)
        return Tokens(codes, scales, wav.shape[-1], self.sample_rate, bandwidth, self.model_id)

    def _prepare(self, wav: torch.Tensor | np.ndarray, sample_rate: int | None) -> torch.Tensor:
        """Checked float audio ``[B, C, T]`` at the model's rate and channel count."""
        if isinstance(wav, np.ndarray):
            wav = torch.from_numpy(np.ascontiguousarray(wav))
        check_audio(wav)
        if wav.dim() == 2:
            wav = wav.unsqueeze(0)
        wav = wav.float()
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate != self.sample_rate or wav.shape[1] != self.channels:
            wav = convert_audio(wav, rate, self.sample_rate, self.channels)
        return wav

    def encode_batch(
        self,
        wavs: Sequence[torch.Tensor | np.ndarray],
        sample_rate: int | Sequence[int] | None = None,
        bandwidth: float | None = None,
        max_batch: int = 16,
    ) -> list[Tokens]:
        """Turns many signals of any lengths into tokens, in shared forward passes.

        Each result is what :meth:`encode` gives for that signal alone: every signal is
        padded inside the network as it would be alone (see :mod:`audiotok.codec.batching`),
        not with zeros to the longest.

        Args:
            wavs: Signals ``[C, T_i]`` (float, torch or numpy), of any lengths.
            sample_rate: The rate of all signals, or one rate per signal; None for the
                model's. Signals are converted as in :meth:`encode`.
            bandwidth: kbps, one of :attr:`bandwidths`; None for :attr:`default_bandwidth`.
            max_batch: Most signals (segments, for segmented models) in one forward pass;
                memory grows with it times the longest signal.

        Returns:
            One :class:`Tokens` (``B == 1``) per signal, in order.

        Raises:
            AudioError: A bad signal (the message names its position), unsupported bandwidth.
        """
        bandwidth = self.check_bandwidth(bandwidth)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if sample_rate is None or not isinstance(sample_rate, Sequence):
            rates: Sequence[int | None] = [sample_rate] * len(wavs)
        else:
            rates = list(sample_rate)
            if len(rates) != len(wavs):
                raise ValueError(f"{len(rates)} sample rates for {len(wavs)} signals")
        prepared = []
        for i, (wav, rate) in enumerate(zip(wavs, rates, strict=True)):
            if getattr(wav, "ndim", 0) != 2:
                shape = list(wav.shape) if hasattr(wav, "shape") else type(wav).__name__
                raise AudioError(f"signal {i}: expected [C, T], got {shape}")
            try:
                prepared.append(self._prepare(wav, rate).to(self.device))
            except AudioError as exc:
                raise AudioError(f"signal {i}: {exc}") from None
        with torch.inference_mode():
            results = self._encode_many(prepared, bandwidth, max_batch)
        return [
            Tokens(codes, scales, wav.shape[-1], self.sample_rate, bandwidth, self.model_id)
            for (codes, scales), wav in zip(results, prepared, strict=True)
        ]

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

    def decode_batch(self, tokens: Sequence[Tokens], max_batch: int = 16) -> list[torch.Tensor]:
        """Turns many tokens of any lengths back into audio, in shared forward passes.

        Each result is what :meth:`decode` gives for those tokens alone.

        Args:
            tokens: Tokens made by this model; each may hold several signals (``B > 1``).
            max_batch: Most signals (segments, for segmented models) in one forward pass.

        Returns:
            Audio ``[B_i, C, length_i]`` per element of ``tokens``, as :meth:`decode` returns.

        Raises:
            TokensError: Tokens that don't fit this model.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        rows = []
        for t in tokens:
            self.check_tokens(t)
            for b in range(t.batch_size):
                scales = None if t.scales is None else t.scales[b : b + 1].to(self.device)
                rows.append((t.codes[b : b + 1].to(self.device), scales, t.length))
        with torch.inference_mode():
            audio = iter(self._decode_many(rows, max_batch))
        return [torch.cat([next(audio) for _ in range(t.batch_size)]) for t in tokens]
