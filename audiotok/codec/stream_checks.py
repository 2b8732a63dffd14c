"""What a codec's stream is fed, checked as ``Codec.encode`` and ``decode`` check theirs.

A stream's ``encode`` takes audio chunks ``[B, C, n]`` and its ``decode`` codes ``[B, K, f]``;
without checks a chunk of the wrong shape or dtype fails deep inside a convolution (or, for
int16 or NaN samples, is silently coded), and codes out of range index past a codebook.
:class:`StreamGuard` turns each into one-line ``AudioError`` / ``TokensError`` and refuses a
stream used after it ended. The torch streams and the ONNX Runtime one (numpy, no torch
needed) share it, so both refuse the same inputs.

Example:
    >>> guard = StreamGuard(batch_size=1, channels=1, num_codebooks=32, cardinality=1024,
    ...                     framework="np")
    >>> guard.chunk(np.zeros((1, 1, 320))).dtype
    dtype('float32')
    >>> guard.chunk(np.zeros((1, 2, 320)))
    Traceback (most recent call last):
    ...
    audiotok.errors.AudioError: a stream chunk is [B=1, C=1, n], not [1, 2, 320]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..audio.read import all_finite, is_float, is_tensor, to_numpy
from ..errors import AudioError, TokensError


class StreamGuard:
    """Checks and converts a stream's inputs; tracks whether its sides have ended.

    Args:
        batch_size: Signals streamed in parallel ``B`` (at least 1).
        channels: The model's channels ``C``.
        num_codebooks: The most codebooks codes may have (the model's ``n_q``).
        cardinality: Entries per codebook (codes are in ``[0, cardinality)``).
        device: Where the stream's tensors live (``"pt"``).
        framework: What the checked inputs become: ``"pt"`` torch tensors on ``device``, or
            ``"np"`` numpy arrays (torch tensors are taken and converted either way).
    """

    def __init__(
        self,
        batch_size: int,
        channels: int,
        num_codebooks: int,
        cardinality: int,
        device: Any = "cpu",
        framework: str = "pt",
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"a stream's batch_size must be at least 1, not {batch_size}")
        self.batch_size, self.channels = int(batch_size), channels
        self.num_codebooks, self.cardinality, self.device = num_codebooks, cardinality, device
        self.framework = framework
        self.closed = self.encode_ended = self.decode_ended = False

    def check_open(self, side: str) -> None:
        """Raises unless ``side`` (``encode`` or ``decode``) may still be fed."""
        if self.closed:
            raise RuntimeError("the stream is closed (its with block has ended)")
        if getattr(self, f"{side}_ended"):
            raise RuntimeError(f"{side}_end() was called: start a new stream for more audio")

    def chunk(self, audio: Any) -> Any:
        """``audio`` ``[B, C, n]`` (float, torch or numpy; any ``n``, even 0) as float32."""
        audio = self._array(audio)
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
        if not is_float(audio):
            raise AudioError(f"a stream chunk holds float samples, not {audio.dtype}")
        audio = self._as(audio, "float32")  # then checked: float64 beyond float32 becomes inf
        if not all_finite(audio):
            raise AudioError("a stream chunk contains NaN or infinite samples")
        return audio

    def codes(self, codes: Any) -> Any:
        """``codes`` ``[B, K, f]`` (integers in range, ``1 <= K <= n_q``) as int64."""
        codes = self._array(codes)
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
        if is_float(codes) or str(codes.dtype).endswith("bool"):
            raise TokensError(f"stream codes are integers, not {codes.dtype}")
        if np.prod(codes.shape) and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise TokensError(f"stream codes are outside [0, {self.cardinality})")
        return self._as(codes, "int64")

    def scales(self, scales: Any, normalized: bool) -> Any:
        """One segment's ``scales`` ``[B]``: finite where the model normalises (None refused),
        None where it does not (anything else refused), as ``Codec.decode`` checks them."""
        if not normalized:
            if scales is not None:
                raise TokensError("this model keeps no scales: pass None")
            return None
        array = self._array(scales)
        if array is not None and array.ndim == 2 and tuple(array.shape) == (self.batch_size, 1):
            array = array[:, 0]  # one column of Tokens.scales [B, S]
        if array is None or tuple(array.shape) != (self.batch_size,):
            shape = list(getattr(array, "shape", ())) if scales is not None else None
            raise TokensError(f"a segment's scales are [B={self.batch_size}], not {shape}")
        array = self._as(array, "float32")
        if not all_finite(array):
            raise TokensError("a segment's scales contain NaN or infinite values")
        return array

    def _array(self, value: Any) -> Any:
        """``value`` as an array of the guard's framework, or None (not an array)."""
        if not (isinstance(value, np.ndarray) or is_tensor(value)):
            return None
        if self.framework == "np":
            return to_numpy(value)
        import torch

        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        return value

    def _as(self, array: Any, dtype: str) -> Any:
        if self.framework == "np":
            with np.errstate(over="ignore"):  # float64 beyond float32: inf, refused after
                return np.ascontiguousarray(array, dtype=dtype)
        import torch

        return array.to(self.device, getattr(torch, dtype))
