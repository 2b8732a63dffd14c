"""What a codec's stream is fed, checked as ``Codec.encode`` and ``decode`` check theirs.

A stream's ``encode`` takes audio chunks ``[B, C, n]`` and its ``decode`` codes ``[B, K, f]``;
without checks a chunk of the wrong shape or dtype fails deep inside a convolution (or, for
int16 or NaN samples, is silently coded), and codes out of range index past a codebook.
:class:`StreamGuard` turns each into one-line ``AudioError`` / ``TokensError`` and refuses a
stream used after it ended.

Example:
    >>> guard = StreamGuard(batch_size=1, channels=1, num_codebooks=32, cardinality=1024,
    ...                     device=torch.device("cpu"))
    >>> guard.chunk(torch.zeros(1, 1, 320)).dtype
    torch.float32
    >>> guard.chunk(torch.zeros(1, 2, 320))
    Traceback (most recent call last):
    ...
    audiotok.errors.AudioError: a stream chunk is [B=1, C=1, n], not [1, 2, 320]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import AudioError, TokensError


class StreamGuard:
    """Checks and converts a stream's inputs; tracks whether its sides have ended.

    Args:
        batch_size: Signals streamed in parallel ``B`` (at least 1).
        channels: The model's channels ``C``.
        num_codebooks: The most codebooks codes may have (the model's ``n_q``).
        cardinality: Entries per codebook (codes are in ``[0, cardinality)``).
        device: Where the stream's tensors live.
    """

    def __init__(
        self,
        batch_size: int,
        channels: int,
        num_codebooks: int,
        cardinality: int,
        device: torch.device,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"a stream's batch_size must be at least 1, not {batch_size}")
        self.batch_size, self.channels = int(batch_size), channels
        self.num_codebooks, self.cardinality, self.device = num_codebooks, cardinality, device
        self.closed = self.encode_ended = self.decode_ended = False

    def check_open(self, side: str) -> None:
        """Raises unless ``side`` (``encode`` or ``decode``) may still be fed."""
        if self.closed:
            raise RuntimeError("the stream is closed (its with block has ended)")
        if getattr(self, f"{side}_ended"):
            raise RuntimeError(f"{side}_end() was called: start a new stream for more audio")

    def chunk(self, audio: Any) -> Tensor:
        """``audio`` ``[B, C, n]`` (float, torch or numpy; any ``n``, even 0) as float32."""
        audio = _tensor(audio)
        if (
            audio is None
            or audio.ndim != 3
            or tuple(audio.shape[:2])
            != (
                self.batch_size,
                self.channels,
            )
        ):
            shape = list(getattr(audio, "shape", ()))
            raise AudioError(
                f"a stream chunk is [B={self.batch_size}, C={self.channels}, n], not {shape}"
            )
        if not audio.is_floating_point():
            raise AudioError(f"a stream chunk holds float samples, not {audio.dtype}")
        audio = audio.to(self.device, torch.float32)
        if not bool(audio.isfinite().all()):
            raise AudioError("a stream chunk contains NaN or infinite samples")
        return audio

    def codes(self, codes: Any) -> Tensor:
        """``codes`` ``[B, K, f]`` (integers in range, ``1 <= K <= n_q``) as int64."""
        codes = _tensor(codes)
        if (
            codes is None
            or codes.ndim != 3
            or codes.shape[0] != self.batch_size
            or not 1 <= codes.shape[1] <= self.num_codebooks
        ):
            shape = list(getattr(codes, "shape", ()))
            raise TokensError(
                f"stream codes are [B={self.batch_size}, K<={self.num_codebooks}, f], not {shape}"
            )
        if codes.is_floating_point() or codes.dtype == torch.bool:
            raise TokensError(f"stream codes are integers, not {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise TokensError(f"stream codes are outside [0, {self.cardinality})")
        return codes.to(self.device, torch.long)


def _tensor(value: Any) -> Tensor | None:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value if isinstance(value, Tensor) else None
