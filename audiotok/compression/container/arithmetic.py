"""Arithmetic coding, bit-compatible with the ``encodec`` package (``encodec.quantization.ac``).

The ``.ecdc`` files that the ``encodec`` package writes with its entropy-coding language model
hold one arithmetic-coded stream per segment. Both ends split a 24-bit range among the 1024
symbols of a codebook in proportion to a *quantized* CDF built from the LM's probabilities,
shift in fresh bits whenever the range gets narrower than ``2 ** 24``, and emit the leading
bits that ``low`` and ``high`` share. Bits go out in the order of ``encodec``'s ``BitPacker``
with 1-bit values: the first bit of the stream is the least significant bit of the first byte.

What differs from the reference, without changing a single output bit:

* :func:`build_stable_quantized_cdf` takes ``[..., N]`` probabilities, so the ``K`` CDFs of a
  frame come from one tensor expression instead of ``K`` calls. Every step of it is an
  elementwise, correctly rounded float operation or an integer cumulative sum, so the result
  does not depend on the batch shape.
* The coder works on Python ints only: the range rescaling ``ceil(c * delta / 2 ** 24)`` is
  done in integers (the reference's float product is exact, because ``c * delta < 2 ** 49``),
  the bit-by-bit loops are replaced by shifts of as many bits as needed at once, and the
  decoder finds its symbol by bisection over a list instead of a recursive search calling
  ``.item()``.

Example:
    >>> import torch
    >>> pdf = torch.softmax(torch.arange(4.0), dim=0)
    >>> cdf = build_stable_quantized_cdf(pdf)
    >>> coder = ArithmeticCoder()
    >>> for s in (3, 2, 3, 0):
    ...     coder.push(s, cdf)
    >>> data = coder.finish()
    >>> decoder = ArithmeticDecoder(data)
    >>> [decoder.pull(cdf) for _ in range(4)]
    [3, 2, 3, 0]
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import torch

from ...errors import CorruptDataError, TruncatedError

TOTAL_RANGE_BITS = 24
ROUNDOFF = 1e-8
MIN_RANGE = 2

# Our bit writer and reader work most significant bit first (a byte is appended or consumed
# as a whole); the reference stores the first bit in the least significant position. Reversing
# the bits of every byte with this table converts between the two, in C, for a whole stream.
BIT_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def build_stable_quantized_cdf(
    pdf: torch.Tensor,
    total_range_bits: int = TOTAL_RANGE_BITS,
    roundoff: float = ROUNDOFF,
    min_range: int = MIN_RANGE,
) -> torch.Tensor:
    """Quantized CDFs splitting ``[0, 2 ** total_range_bits)`` in proportion to ``pdf``.

    Bit-identical to ``encodec``'s function of that name, applied to each row of ``pdf``.

    Args:
        pdf: Probabilities ``[..., N]`` (float32, as the LM's softmax gives them).
        total_range_bits: Bits of the coder's range.
        roundoff: The probabilities are floored to multiples of this first.
        min_range: Width every symbol gets at least, so that none is impossible.

    Returns:
        int64 ``[..., N]``: the exclusive upper bound of each symbol's range.
    """
    if min_range < 2:
        raise ValueError("min_range must be at least 2")
    pdf = pdf.detach()
    if roundoff:
        pdf = (pdf / roundoff).floor() * roundoff
    total_range = 2**total_range_bits
    alpha = min_range * pdf.shape[-1] / total_range
    if alpha > 1:
        raise ValueError(f"{pdf.shape[-1]} symbols need a min_range below {min_range}")
    # Same expression as the reference: the scalar is computed in double, the product in the
    # tensor's dtype; int64 sums are exact in any order.
    ranges = (((1 - alpha) * total_range) * pdf).floor().long()
    ranges += min_range
    return torch.cumsum(ranges, dim=-1)


class ArithmeticCoder:
    """Arithmetic encoder producing ``encodec``'s byte stream.

    Symbols are pushed with the quantized CDF they were drawn from; :meth:`finish` returns the
    stream's bytes. The state is ``low`` and ``high`` (inclusive), integers of ``max_bit + 1``
    bits once their common leading bits have been emitted.

    Args:
        total_range_bits: Bits of the range; 24 in ``.ecdc`` files.
    """

    def __init__(self, total_range_bits: int = TOTAL_RANGE_BITS) -> None:
        if not 1 <= total_range_bits <= 30:
            raise ValueError(f"total_range_bits must be in [1, 30], not {total_range_bits}")
        self.total_range_bits = total_range_bits
        self.low = 0
        self.high = 0
        self.max_bit = -1
        self._out = bytearray()
        self._acc = 0  # emitted bits not yet forming a whole byte, first bit highest
        self._nacc = 0

    def _emit(self, value: int, nbits: int) -> None:
        """Appends ``nbits`` bits, the most significant of ``value`` first."""
        acc = (self._acc << nbits) | value
        nacc = self._nacc + nbits
        if nacc >= 8:
            whole = nacc & ~7
            self._out += (acc >> (nacc - whole)).to_bytes(whole >> 3, "big")
            nacc -= whole
            acc &= (1 << nacc) - 1
        self._acc, self._nacc = acc, nacc

    def push_range(self, range_low: int, range_high: int) -> None:
        """Narrows the range to a symbol's quantized interval.

        Args:
            range_low: The symbol's lower bound (``cdf[s - 1]``, or 0 for ``s == 0``).
            range_high: Its inclusive upper bound (``cdf[s] - 1``).
        """
        bits = self.total_range_bits
        low, high = self.low, self.high
        delta = high - low + 1
        if delta >> bits == 0:
            # The reference doubles the range one bit at a time until it is >= 2 ** bits.
            shift = bits + 1 - delta.bit_length()
            low <<= shift
            high = (high << shift) | ((1 << shift) - 1)
            delta <<= shift
            self.max_bit += shift
        # ceil / floor of c * delta / 2 ** bits, exactly as the reference's float expression.
        high = low + ((range_high * delta) >> bits)
        low = low - ((-range_low * delta) >> bits)
        if not low <= high < 1 << (self.max_bit + 1):
            raise ValueError(
                f"symbol range [{range_low}, {range_high}] does not fit the coder's range: "
                "the quantized CDF must be increasing and end at or below 2 ** total_range_bits"
            )
        # Emit the leading bits that low and high share: they can no longer change.
        keep = (low ^ high).bit_length()
        common = self.max_bit + 1 - keep
        if common > 0:
            self._emit(low >> keep, common)
            mask = (1 << keep) - 1
            low &= mask
            high &= mask
            self.max_bit = keep - 1
        self.low, self.high = low, high

    def push(self, symbol: int, quantized_cdf: torch.Tensor | Sequence[int]) -> None:
        """Encodes ``symbol`` with one quantized CDF ``[N]`` (the reference's API)."""
        range_low = 0 if symbol == 0 else int(quantized_cdf[symbol - 1])
        self.push_range(range_low, int(quantized_cdf[symbol]) - 1)

    def push_frame(self, symbols: torch.Tensor, quantized_cdfs: torch.Tensor) -> None:
        """Encodes ``K`` symbols, one per CDF, in order.

        Args:
            symbols: int64 ``[K]``, each in ``[0, N)``.
            quantized_cdfs: int64 ``[K, N]`` from :func:`build_stable_quantized_cdf`.
        """
        symbols = symbols.to(quantized_cdfs.device).long().view(-1, 1)
        # Both bounds of every symbol in one gather; a zero column stands for cdf[-1].
        padded = torch.nn.functional.pad(quantized_cdfs, (1, 0))
        bounds = torch.cat([padded.gather(1, symbols), padded.gather(1, symbols + 1) - 1], 1)
        for range_low, range_high in bounds.tolist():
            self.push_range(range_low, range_high)

    def finish(self) -> bytes:
        """Emits the remaining bits of ``low``, pads the last byte and returns the stream."""
        if self.max_bit >= 0:
            self._emit(self.low, self.max_bit + 1)
            self.max_bit = -1
        if self._nacc:
            self._out.append((self._acc << (8 - self._nacc)) & 0xFF)
            self._acc = self._nacc = 0
        return bytes(self._out).translate(BIT_REVERSE)


class ArithmeticDecoder:
    """Arithmetic decoder for ``encodec``'s streams (the inverse of :class:`ArithmeticCoder`).

    It must be given exactly the CDFs the encoder used, in the same order. Bytes are read only
    when needed, so after the last symbol of a stream :attr:`position` is just past its last
    byte, where the next segment's stream begins.

    Args:
        data: The file's bytes.
        offset: Where the stream starts in ``data``.
        total_range_bits: Bits of the range; 24 in ``.ecdc`` files.
        reversed_data: ``data`` with the bits of every byte reversed (``data.translate(
            BIT_REVERSE)``), when the caller has it already.

    Raises:
        TruncatedError: From :meth:`pull`, when the data ends inside the stream.
        CorruptDataError: From :meth:`pull`, when the bits match no symbol's interval.
    """

    def __init__(
        self,
        data: bytes,
        offset: int = 0,
        total_range_bits: int = TOTAL_RANGE_BITS,
        *,
        reversed_data: bytes | None = None,
    ) -> None:
        self.total_range_bits = total_range_bits
        self._data = data.translate(BIT_REVERSE) if reversed_data is None else reversed_data
        self.position = offset
        self.low = 0
        self.high = 0
        self.current = 0
        self.max_bit = -1
        self._acc = 0  # bytes read but not yet consumed, first bit highest
        self._nacc = 0

    def _read(self, nbits: int) -> int:
        """The next ``nbits`` bits of the stream, first bit highest."""
        acc, nacc = self._acc, self._nacc
        if nacc < nbits:
            need = (nbits - nacc + 7) >> 3
            end = self.position + need
            if end > len(self._data):
                raise TruncatedError("the arithmetic-coded stream ends early", len(self._data))
            acc = (acc << (need << 3)) | int.from_bytes(self._data[self.position : end], "big")
            nacc += need << 3
            self.position = end
        nacc -= nbits
        self._acc, self._nacc = acc & ((1 << nacc) - 1), nacc
        return acc >> nacc

    def pull_list(self, quantized_cdf: list[int]) -> int:
        """Decodes one symbol with a quantized CDF given as a list of ints (the fast path)."""
        bits = self.total_range_bits
        low, high, current = self.low, self.high, self.current
        delta = high - low + 1
        if delta >> bits == 0:
            shift = bits + 1 - delta.bit_length()
            low <<= shift
            high = (high << shift) | ((1 << shift) - 1)
            current = (current << shift) | self._read(shift)
            delta <<= shift
            self.max_bit += shift
        # The symbol s whose interval [ceil(cdf[s-1] * delta / M), floor((cdf[s] - 1) * delta
        # / M)] (offset by low) holds current: ceil(c * delta / M) <= t iff c <= t * M // delta.
        target = current - low
        symbol = bisect_right(quantized_cdf, (target << bits) // delta)
        if symbol == len(quantized_cdf) or target > ((quantized_cdf[symbol] - 1) * delta) >> bits:
            raise CorruptDataError(
                "the arithmetic-coded stream matches no symbol", max(self.position - 1, 0)
            )
        range_low = quantized_cdf[symbol - 1] if symbol else 0
        high = low + (((quantized_cdf[symbol] - 1) * delta) >> bits)
        low = low - ((-range_low * delta) >> bits)
        keep = (low ^ high).bit_length()
        if high >> (self.max_bit + 1):
            raise CorruptDataError(
                "the quantized CDF exceeds the coder's range", max(self.position - 1, 0)
            )
        if self.max_bit + 1 > keep:
            mask = (1 << keep) - 1
            low &= mask
            high &= mask
            current &= mask
            self.max_bit = keep - 1
        self.low, self.high, self.current = low, high, current
        return symbol

    def pull(self, quantized_cdf: torch.Tensor | Sequence[int]) -> int:
        """Decodes one symbol with one quantized CDF ``[N]`` (the reference's API)."""
        if isinstance(quantized_cdf, torch.Tensor):
            quantized_cdf = quantized_cdf.tolist()
        return self.pull_list(list(quantized_cdf))

    def pull_frame(self, quantized_cdfs: torch.Tensor) -> list[int]:
        """Decodes ``K`` symbols, one per row of ``quantized_cdfs`` (int64 ``[K, N]``)."""
        return [self.pull_list(cdf) for cdf in quantized_cdfs.tolist()]
