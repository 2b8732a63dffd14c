"""The tokenizer interface: the one way the rest of audiotok reaches a codec.

Compression, generation and training see a codec only as a :class:`Codec`: audio in,
:class:`~audiotok.codec.tokens.Tokens` out, and back. Subclasses implement ``_encode`` and
``_decode`` on tensors already at the model's rate and channel count; this base class does
the checking and conversion that every codec needs. A codec works in one kind of array, its
:attr:`Codec.framework`: torch tensors on its device (the torch backend) or numpy arrays (the
ONNX Runtime backend, which runs without torch); it takes audio and tokens of either kind and
gives back its own.

Example:
    >>> codec = audiotok.load_codec("encodec_24khz")           # doctest: +SKIP
    >>> tokens = codec.encode(wav, sample_rate=44_100, bandwidth=6.0)
    >>> tokens.codes.shape                                       # [B, K, F]
    torch.Size([1, 8, 750])
    >>> audio = codec.decode(tokens)                             # [B, C, length] at 24 kHz
"""

from __future__ import annotations

import abc
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..audio.read import all_finite, check_audio, convert_audio
from ..errors import AudioError, TokensError
from .arrays import as_framework, concat, inference
from .tokens import Tokens


class Codec(abc.ABC):
    """A neural audio codec seen as a tokenizer."""

    model_id: str
    """Registry name of the model, or another stable id for models outside the registry."""

    framework: str = "pt"
    """The arrays of its tokens and audio: ``"pt"`` (torch tensors on :attr:`device`) or
    ``"np"`` (numpy arrays); see :mod:`audiotok.codec.arrays`."""

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
    def device(self) -> Any:
        """Where the model's weights are (a ``torch.device``; ``"cpu"`` for numpy codecs)."""

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
    def _encode(self, wav: Any, bandwidth: float) -> tuple[Any, Any]:
        """Codes ``[B, K, F]`` and scales ``[B, S]`` (or None) of ``wav`` ``[B, C, T]``, all
        arrays of :attr:`framework` (on :attr:`device`)."""

    @abc.abstractmethod
    def _decode(self, codes: Any, scales: Any, length: int) -> Any:
        """Audio ``[B, C, length]`` from codes ``[B, K, F]`` and scales ``[B, S]`` or None."""

    def _encode_many(
        self, wavs: list[Any], bandwidth: float, max_batch: int
    ) -> list[tuple[Any, Any]]:
        """Codes ``[1, K, F_i]`` and scales ``[1, S_i]`` (or None) of each ``[1, C, T_i]``.

        One by one here; codecs that can batch override it.
        """
        return [self._encode(wav, bandwidth) for wav in wavs]

    def _decode_many(self, items: list[tuple[Any, Any, int]], max_batch: int) -> list[Any]:
        """Audio ``[1, C, length_i]`` of each ``(codes [1, K, F_i], scales, length_i)``."""
        return [self._decode(codes, scales, length) for codes, scales, length in items]

    @property
    def max_codebooks(self) -> int:
        """The most codebooks tokens may have to be decoded (those of the top bandwidth)."""
        return self.num_codebooks(self.bandwidths[-1])

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
        self, wav: Any, sample_rate: int | None = None, bandwidth: float | None = None
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
            the number of samples after resampling, arrays of :attr:`framework`.

        Raises:
            AudioError: Empty or non-finite audio, bad shape, unsupported bandwidth.
        """
        bandwidth = self.check_bandwidth(bandwidth)
        wav = self._prepare(wav, sample_rate)
        with inference(self.framework):
            codes, scales = self._encode(wav, bandwidth)
        return Tokens(codes, scales, wav.shape[-1], self.sample_rate, bandwidth, self.model_id)

    def _prepare(self, wav: Any, sample_rate: int | None) -> Any:
        """Checked float32 audio ``[B, C, T]`` at the model's rate and channel count, as an
        array of :attr:`framework` on :attr:`device`."""
        if isinstance(wav, np.ndarray):
            wav = np.ascontiguousarray(wav)
        check_audio(wav)
        channels, length = wav.shape[-2], wav.shape[-1]
        if channels > 64 and channels > length:  # soundfile.read's [T, C], averaged otherwise
            raise AudioError(
                f"audio of shape {list(wav.shape)} would be {channels} channels of {length} "
                "samples: pass [C, T] (soundfile reads [T, C]: transpose it)"
            )
        wav = as_framework(wav, self.framework, dtype="float32")
        if wav.ndim == 2:
            wav = wav[None]
        if sample_rate is not None and (
            isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real)
        ):
            raise AudioError(f"sample_rate must be a number of Hz, not {sample_rate!r}")
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if sample_rate is not None and rate != sample_rate:  # 44100.5 would be cut to 44100
            raise AudioError(f"sample rates are whole numbers of Hz, not {sample_rate}")
        if rate != self.sample_rate or wav.shape[1] != self.channels:
            wav = convert_audio(wav, rate, self.sample_rate, self.channels)
        return as_framework(wav, self.framework, device=self.device)

    def encode_batch(
        self,
        wavs: Sequence[Any],
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
        if isinstance(sample_rate, np.ndarray) and sample_rate.ndim == 0:
            sample_rate = sample_rate.item()  # one rate for all, as a 0-d array
        one_rate = isinstance(sample_rate, str | bytes) or not isinstance(
            sample_rate, (Sequence, np.ndarray)
        )  # a string is a sequence too: of characters, not rates
        if sample_rate is None or one_rate:
            rates: Sequence[int | None] = [sample_rate] * len(wavs)
        else:  # a list, or an array of rates (one per signal)
            rates = [r.item() if hasattr(r, "item") else r for r in sample_rate]
            if len(rates) != len(wavs):
                raise ValueError(f"{len(rates)} sample rates for {len(wavs)} signals")
        prepared = []
        for i, (wav, rate) in enumerate(zip(wavs, rates, strict=True)):
            if getattr(wav, "ndim", 0) != 2:
                shape = list(wav.shape) if hasattr(wav, "shape") else type(wav).__name__
                raise AudioError(f"signal {i}: expected [C, T], got {shape}")
            try:
                prepared.append(self._prepare(wav, rate))
            except AudioError as exc:
                raise AudioError(f"signal {i}: {exc}") from None
        with inference(self.framework):
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
        max_k = self.max_codebooks
        if not 1 <= tokens.num_codebooks <= max_k:
            raise TokensError(
                f"{where} have {tokens.num_codebooks} codebooks; {self.model_id} has {max_k}"
            )
        if tokens.length < 1:  # the backends disagreed: a torch error, or empty ONNX audio
            raise TokensError(f"{where} stand for no audio (length {tokens.length})")
        expected = self.num_frames(tokens.length)
        if tokens.num_frames != expected:
            raise TokensError(
                f"{where} have {tokens.num_frames} frames, "
                f"but {tokens.length} samples make {expected}"
            )
        if (
            tokens.num_frames
            and tokens.num_codebooks
            and (int(tokens.codes.min()) < 0 or int(tokens.codes.max()) >= self.cardinality)
        ):
            raise TokensError(f"{where} have codes outside [0, {self.cardinality})")
        if tokens.scales is not None and not all_finite(tokens.scales):
            raise TokensError(f"{where} have NaN or infinite scales")
        if tokens.model_id != self.model_id:
            warnings.warn(
                f"decoding {where} with {self.model_id!r}; "
                "the audio is garbage unless both share weights",
                stacklevel=3,
            )

    def decode(self, tokens: Tokens) -> Any:
        """Turns tokens back into audio.

        Args:
            tokens: Tokens made by this model (or one with the same weights), of either
                framework.

        Returns:
            Audio ``[B, C, tokens.length]`` at :attr:`sample_rate`, float32, an array of
            :attr:`framework` (on :attr:`device`).

        Raises:
            TokensError: The tokens don't fit this model (rate, codebooks, frames, code range).
        """
        self.check_tokens(tokens)
        with inference(self.framework):
            return self._decode(*self._arrays(tokens, slice(None)), tokens.length)

    def _arrays(self, tokens: Tokens, rows: slice) -> tuple[Any, Any]:
        """Codes and scales (or None) of ``tokens``' ``rows``, as :attr:`framework`'s arrays."""
        codes = as_framework(tokens.codes[rows], self.framework, device=self.device)
        if tokens.scales is None:
            return codes, None
        return codes, as_framework(tokens.scales[rows], self.framework, device=self.device)

    def decode_batch(self, tokens: Sequence[Tokens], max_batch: int = 16) -> list[Any]:
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
                rows.append((*self._arrays(t, slice(b, b + 1)), t.length))
        with inference(self.framework):
            audio = iter(self._decode_many(rows, max_batch))
        return [concat([next(audio) for _ in range(t.batch_size)], axis=0) for t in tokens]
