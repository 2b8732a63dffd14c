"""The ``raw`` entropy coder (id 0): codes bit-packed at a fixed width.

Payload of a packet with codes ``[K, F]`` and ``cardinality = 2^b``:

- the ``K * F`` codes in codebook-major order (``codes[0, 0], codes[0, 1], ...,
  codes[0, F-1], codes[1, 0], ...``), i.e. the C order of the ``[K, F]`` array;
- each written as ``b`` bits, most significant bit first, the codes' bits concatenated
  without gaps, the first bit in the most significant bit of the first byte;
- zero bits after the last code up to the next byte boundary.

The payload is exactly ``ceil(K * F * b / 8)`` bytes (0 when ``F == 0``). A decoder rejects
any other length and padding bits that are not zero, so every code array has exactly one
payload. Codebook-major order makes the codes of the first ``k`` codebooks (a lower bandwidth)
a prefix of the payload. There are no parameters: :meth:`RawCoder.params` is empty.

Example:
    >>> import numpy as np
    >>> RawCoder(16, 1).encode(np.array([[0xA, 0xB, 0xC]])).hex()
    'abc0'
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ...errors import CorruptDataError, UnsupportedFormatError
from .entropy import EntropyCoder, check_shape


class RawCoder(EntropyCoder):
    """Fixed-width bit packing: ``log2(cardinality)`` bits per code, no compression.

    Args:
        cardinality: Entries per codebook, a power of two in ``[2, 65536]``.
        num_codebooks: ``K``.
    """

    coder_id: ClassVar[int] = 0
    name: ClassVar[str] = "raw"

    def params(self) -> bytes:
        """Empty: the raw coder has no parameters."""
        return b""

    @classmethod
    def from_params(
        cls,
        cardinality: int,
        num_codebooks: int,
        data: bytes,
        priors: np.ndarray | None = None,
    ) -> RawCoder:
        """A raw coder; ``data`` must be empty, ``priors`` are ignored."""
        check_shape(cardinality, num_codebooks, UnsupportedFormatError)
        if len(data):
            raise CorruptDataError(f"the raw coder has no parameters, got {len(data)} bytes")
        return cls(cardinality, num_codebooks)

    def max_payload_size(self, num_frames: int) -> int:
        """The payload size, which only depends on the frame count."""
        return -(-self.num_codebooks * num_frames * self.bits_per_code // 8)

    def encode(self, codes: np.ndarray) -> bytes:
        """Packs ``codes`` ``[K, F]``; see the module docstring for the layout."""
        flat = self.check_codes(codes).reshape(-1)
        # Each code as a big-endian 16-bit word, unpacked to 16 bits (most significant
        # first); its low b bits are the code's. packbits then pads the end with zeros.
        words = flat.astype(">u2").view(np.uint8).reshape(-1, 2)
        bits = np.unpackbits(words, axis=1)[:, 16 - self.bits_per_code :]
        return np.packbits(bits.reshape(-1)).tobytes()

    def decode(self, payload: bytes, num_frames: int) -> np.ndarray:
        """Unpacks ``num_frames`` frames; CorruptDataError on a wrong size or padding."""
        num_frames = self.check_num_frames(num_frames)
        count = self.num_codebooks * num_frames
        size = self.max_payload_size(num_frames)
        # Checked before anything is allocated: a corrupt frame count costs nothing.
        if len(payload) != size:
            raise CorruptDataError(
                f"raw payload of {len(payload)} bytes, expected {size} for {num_frames} frames"
            )
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
        used = count * self.bits_per_code
        if bits[used:].any():
            raise CorruptDataError("raw payload has non-zero padding bits")
        rows = bits[:used].reshape(count, self.bits_per_code)
        codes = np.zeros(count, dtype=np.int64)
        for column in range(self.bits_per_code):  # b <= 16 passes, each over all codes
            codes = (codes << 1) | rows[:, column]
        return codes.reshape(self.num_codebooks, num_frames)
