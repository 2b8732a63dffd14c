"""Interleaved word-based rANS, vectorised across lanes: the arithmetic of the adaptive coder.

``K`` independent rANS coders ("lanes", one per codebook) share one stream of 16-bit words,
after F. Giesen's ``ryg_rans`` (word-based rANS with 32-bit state, interleaved streams). Each
lane codes one symbol per time step; numpy handles the ``K`` lanes of a step at once, so
Python loops over time steps only. The exact bitstream (state bounds, formulas, word order,
flush) is specified in :mod:`audiotok.compression.container.adaptive`; in short:

- a state ``x`` is an unsigned 32-bit value kept in ``[L, 2^32)`` with ``L = 2^16``;
- a symbol is an interval ``[start, start + freq)`` of ``[0, 2^P)``, ``P <= 16``;
- encode: if ``x >= freq * 2^(32-P)``, emit ``x mod 2^16`` and ``x //= 2^16`` (at most once,
  as ``P <= 16``), then ``x = (x // freq) * 2^P + start + x mod freq``;
- decode: ``slot = x mod 2^P`` names the symbol, ``x = freq * (x // 2^P) + slot - start``,
  then if ``x < L``: ``x = x * 2^16 + next word``;
- the payload is the ``K`` final encoder states (big-endian uint32, lane 0 first), then the
  words (big-endian uint16) in the order the decoder reads them: step 0's first, and within
  a step by ascending lane.

All state arithmetic is on uint64 arrays, never on numpy's platform-dependent default
integer; no value reaches 2^33, so nothing wraps, even on a damaged payload.
"""

from __future__ import annotations

import numpy as np

from ...errors import CorruptDataError

STATE_LOWER = 1 << 16
"""``L``: a lane's state lies in ``[L, 2^32)`` between steps; the initial encoder state."""
WORD_BITS = 16
"""Bits per renormalisation word."""
STATE_BYTES = 4
"""Bytes per flushed state at the start of a payload."""

_WORD = np.uint64(WORD_BITS)
_WORD_MASK = np.uint64((1 << WORD_BITS) - 1)


def encode_lanes(starts: np.ndarray, freqs: np.ndarray, prob_bits: int) -> bytes:
    """rANS-codes ``F`` steps of ``K`` lanes into a payload.

    rANS is last-in first-out, so the steps are coded from the last to the first; the words
    of each step are collected as a block (ascending lane) and the blocks put in step order,
    which is the order the decoder reads them.

    Args:
        starts: uint64 ``[F, K]``, the start of each coded symbol's interval in ``[0, 2^P)``.
        freqs: uint64 ``[F, K]``, its width, ``>= 1``, ``start + freq <= 2^P``.
        prob_bits: ``P``, at most 16.

    Returns:
        The ``K`` final states (4 bytes each, big-endian) followed by the words (2 bytes each,
        big-endian).
    """
    num_steps, num_lanes = freqs.shape
    precision = np.uint64(prob_bits)
    # A state at or above freq * 2^(32-P) would leave [L, 2^32) after coding: renormalise.
    limit_shift = np.uint64(32 - prob_bits)
    x = np.full(num_lanes, STATE_LOWER, dtype=np.uint64)
    blocks: list[bytes] = []
    for t in range(num_steps - 1, -1, -1):
        freq = freqs[t]
        emit = x >= (freq << limit_shift)
        if emit.any():
            blocks.append((x[emit] & _WORD_MASK).astype(">u2").tobytes())
            x = np.where(emit, x >> _WORD, x)
        quotient, remainder = np.divmod(x, freq)
        x = (quotient << precision) + remainder + starts[t]
    blocks.reverse()
    return x.astype(">u4").tobytes() + b"".join(blocks)


class LaneDecoder:
    """Decodes a payload of :func:`encode_lanes`, one step of all lanes at a time.

    Per step, call :meth:`slots`, find each lane's symbol from its slot, then call
    :meth:`advance` with the symbols' intervals. :meth:`finish` checks the end.

    Args:
        payload: The payload.
        num_lanes: ``K``.
        num_steps: ``F``: at most one word per lane and step, so at most ``K * F`` words.
        prob_bits: ``P``.

    Raises:
        CorruptDataError: The payload can't be the output of ``F`` steps (its size is not
            ``4K`` plus an even number at most ``2KF``, or a state is below ``L``).
    """

    def __init__(self, payload: bytes, num_lanes: int, num_steps: int, prob_bits: int) -> None:
        head = STATE_BYTES * num_lanes
        size = len(payload)
        # Size checks first, so that no garbage length makes us allocate.
        if size < head:
            raise CorruptDataError(
                f"rANS payload of {size} bytes, shorter than its {head}-byte head"
            )
        if (size - head) % 2:
            raise CorruptDataError(f"rANS payload of {size} bytes: half a word at the end")
        if (size - head) // 2 > num_lanes * num_steps:
            raise CorruptDataError(
                f"rANS payload of {size} bytes: more words than {num_steps} frames can hold"
            )
        self.x = np.frombuffer(payload, dtype=">u4", count=num_lanes).astype(np.uint64)
        if (self.x < STATE_LOWER).any():
            raise CorruptDataError("rANS state out of range")
        self.words = np.frombuffer(payload, dtype=">u2", offset=head).astype(np.uint64)
        self.pos = 0
        self.precision = np.uint64(prob_bits)
        self.slot_mask = np.uint64((1 << prob_bits) - 1)

    def slots(self) -> np.ndarray:
        """uint64 ``[K]``: each lane's ``x mod 2^P``, which names its next symbol."""
        return self.x & self.slot_mask

    def advance(self, slots: np.ndarray, starts: np.ndarray, freqs: np.ndarray) -> None:
        """Takes each lane's symbol (interval ``[start, start + freq)``) off its state.

        Args:
            slots: What :meth:`slots` returned.
            starts: uint64 ``[K]``, with ``start <= slot < start + freq``.
            freqs: uint64 ``[K]``.

        Raises:
            CorruptDataError: The words run out.
        """
        # freq * (x // 2^P) + (slot - start) < freq * 2^(32-P) <= 2^32: no overflow, even on
        # garbage, as slot - start < freq.
        x = freqs * (self.x >> self.precision) + (slots - starts)
        refill = x < STATE_LOWER
        count = int(np.count_nonzero(refill))
        if count:
            if self.pos + count > len(self.words):
                raise CorruptDataError("rANS payload ends early")
            # Lanes take the step's words in ascending lane order (boolean indexing order).
            x[refill] = (x[refill] << _WORD) | self.words[self.pos : self.pos + count]
            self.pos += count
        self.x = x

    def finish(self) -> None:
        """Raises CorruptDataError unless every word was read and every state is ``L`` again."""
        if self.pos != len(self.words):
            raise CorruptDataError(
                f"rANS payload has {len(self.words) - self.pos} words left after the last frame"
            )
        if (self.x != STATE_LOWER).any():
            raise CorruptDataError("rANS final state is not the initial one: damaged payload")
