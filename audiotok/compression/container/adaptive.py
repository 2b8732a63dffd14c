"""The ``adaptive`` entropy coder (id 1): interleaved rANS over adaptive per-codebook models.

Each codebook has its own frequency model, which starts every packet from fixed counts (all 1,
or static priors from the model card) and learns the packet's statistics as it goes. The ``K``
codebooks are ``K`` rANS lanes sharing one word stream (:mod:`.rans`), so numpy codes one frame
of all codebooks per step. rANS needs a power-of-two total while the adaptive counts' total
varies, so each step scales the cumulative counts to ``2^P`` slots with integer floor divisions:
exact, and identical on every machine.

Specification
-------------

Notation: ``K`` codebooks, ``F`` frames, ``n`` = cardinality, ``P`` = ``prob_bits``,
``M = 2^P``, ``L = 2^16``, ``inc`` = ``increment``. All arithmetic is on non-negative
integers; no intermediate value exceeds ``2^32``, so 64-bit arithmetic is ample. ``//`` is
floor division, ``mod`` the remainder.

**Parameters** (``params()``, big-endian, 4 or 12 bytes):

=======  ====  ===========================================================================
offset   size  field
=======  ====  ===========================================================================
0        1     flags: bit 0 set = static priors; the other bits are 0
1        1     ``P``, at most 16, with ``n + 2 * inc <= M``
2        2     ``inc``, at least 1
4        8     only if flag bit 0: the first 8 bytes of the SHA-256 of the priors
               (``[K, n]`` in C order, each count as a little-endian uint16)
=======  ====  ===========================================================================

Other flags, sizes or values are not decodable. ``n + 2 * inc <= M`` guarantees that one
halving (below) always makes room for the next increment.

**Model.** Each codebook ``k`` has its own counts ``c[0..n-1]``, reset at the start of every
packet to all 1 (no priors) or to row ``k`` of the priors (integers in ``[1, 65535]``, each
row summing to at most ``M``). ``T = c[0] + ... + c[n-1]``, and ``T <= M`` always. For a
symbol ``s`` let ``cum(s) = c[0] + ... + c[s-1]``; its slots out of ``M`` are::

    start(s) = (cum(s) * M) // T
    freq(s)  = ((cum(s) + c[s]) * M) // T - start(s)          (>= 1, as c[s] >= 1 and T <= M)

After coding ``s`` in codebook ``k`` (encoder and decoder alike): if ``T + inc > M``, every
count of codebook ``k`` becomes ``(c[j] + 1) // 2`` (halved, rounding up, so none reaches 0)
and ``T`` their new sum; then ``c[s] += inc`` and ``T += inc``.

**Payload.** One mode byte, then the body. Mode 0: the body is the packet's codes packed
exactly as by the ``raw`` coder (id 0); the encoder picks it when it is not larger than the
rANS body, as for near-uniform codes, which an adaptive model pays to learn. Mode 1: the rANS
body below. Other modes are not decodable.

**rANS body.** ``4K`` bytes: the decoder's initial states ``X[0..K-1]``, each a big-endian
uint32, codebook 0 first; then ``W`` 16-bit words, each big-endian, with
``0 <= W <= K * F`` (so the body size is ``4K + 2W``). All lanes share the word stream.

**Decoding.** ``x[k] = X[k]``; each must be in ``[L, 2^32)``. For each frame
``t = 0 .. F-1``, for each codebook ``k = 0 .. K-1`` in ascending order (the order only
decides which lane takes the next word)::

    slot = x[k] mod M
    u    = ((slot + 1) * T - 1) // M                (T of codebook k's model)
    s    = the symbol with cum(s) <= u < cum(s) + c[s]
    codes[k, t] = s
    x[k] = freq(s) * (x[k] // M) + slot - start(s)
    if x[k] < L: x[k] = x[k] * 65536 + (the next word of the stream)
    update codebook k's model with s

(``s`` is the symbol with ``start(s) <= slot < start(s) + freq(s)``; ``u`` maps the slot
back to the counts' scale.) After the last frame every word must have been read and every
``x[k]`` must equal ``L``; anything else, or words running out, means a damaged payload.

**Encoding** is the exact inverse. A forward pass over ``t = 0 .. F-1`` runs the models and
records ``start(s)`` and ``freq(s)`` of every ``s = codes[k, t]``. Then, starting from
``x[k] = L`` for every ``k``, for ``t = F-1`` down to ``0``, for each ``k``::

    if x[k] >= freq * 2^(32-P): emit the word x[k] mod 65536; x[k] = x[k] // 65536
    x[k] = (x[k] // freq) * M + start + (x[k] mod freq)

(at most one word per codebook and frame, as ``P <= 16``; ``x[k]`` stays in ``[L, 2^32)``).
The words emitted at frame ``t`` form a block, in ascending ``k``; the payload is the final
``x[0..K-1]`` (big-endian uint32) followed by the blocks of frames ``0, 1, ..., F-1``. The
word codebook ``k`` emits at frame ``t`` is the one it reads back at frame ``t``. With
``F = 0`` the rANS body is ``K`` times ``00 01 00 00`` (and the payload is ``00``, raw).

Costs: ``4K`` bytes of state per packet (the final check ``x[k] == L`` makes 2 of them a
per-codebook check that the payload decoded exactly), plus about ``log2(M / freq)`` bits per
code.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import ClassVar

import numpy as np

from ...errors import CorruptDataError, UnsupportedFormatError
from .entropy import EntropyCoder, check_shape, is_int
from .rans import STATE_BYTES, LaneDecoder, encode_lanes
from .rawpack import RawCoder

# The payload's first byte: how the rest is coded.
MODE_RAW = b"\x00"
MODE_RANS = b"\x01"

DEFAULT_INCREMENT = 32
DEFAULT_PROB_BITS = 15
DEFAULT_PRIOR_BUDGET = 1 << 14
"""Row sum of :meth:`AdaptiveCoder.estimate_priors`: half of ``2^15``, leaving room to adapt."""
FLAG_PRIORS = 0x01
FINGERPRINT_BYTES = 8


def priors_fingerprint(priors: np.ndarray) -> bytes:
    """First 8 bytes of the SHA-256 of ``priors`` as little-endian uint16, C order."""
    return hashlib.sha256(np.ascontiguousarray(priors, dtype="<u2").tobytes()).digest()[:8]


class _Model:
    """The adaptive counts of ``K`` codebooks, stepped for all of them at once.

    The counts of all codebooks lie end to end in one flat array, so one ``cumsum`` gives
    every codebook's cumulative counts (offset by the totals of the codebooks before it) and
    one ``searchsorted`` finds every codebook's symbol.
    """

    def __init__(self, initial: np.ndarray, increment: int, prob_bits: int) -> None:
        self.counts = np.array(initial, dtype=np.int64)  # [K, n], a copy: updated in place
        self.flat = self.counts.reshape(-1)  # a view
        num_lanes, self.n = self.counts.shape
        self.totals = self.counts.sum(axis=1)
        self.offsets = np.arange(num_lanes, dtype=np.int64) * self.n
        self.increment = int(increment)
        self.prob_bits = int(prob_bits)
        self.slots = 1 << prob_bits

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """The flat inclusive cumulative counts, and where each codebook starts in them."""
        cumulative = np.cumsum(self.flat)
        return cumulative, cumulative[self.offsets + self.n - 1] - self.totals

    def _interval_then_update(
        self, index: np.ndarray, cumulative: np.ndarray, base: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(start, freq) as uint64 ``[K]`` of the symbols at flat ``index``, then the update."""
        count = self.flat[index]
        cum = cumulative[index] - count - base
        start = (cum << self.prob_bits) // self.totals
        freq = ((cum + count) << self.prob_bits) // self.totals - start
        self._update(index)
        return start.astype(np.uint64), freq.astype(np.uint64)

    def _update(self, index: np.ndarray) -> None:
        full = self.totals + self.increment > self.slots
        if full.any():
            self.counts[full] = (self.counts[full] + 1) >> 1
            self.totals[full] = self.counts[full].sum(axis=1)
        self.flat[index] += self.increment  # one index per codebook: no repeats
        self.totals += self.increment

    def code(self, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, freq) of each codebook's ``symbols`` (int64 ``[K]``); updates the model."""
        cumulative, base = self._cumulative()
        return self._interval_then_update(self.offsets + symbols, cumulative, base)

    def find(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(symbol int64, start, freq) of each codebook's ``slots`` (uint64 ``[K]``); updates."""
        cumulative, base = self._cumulative()
        # u < T, so the search stays inside each codebook's stretch of the flat array.
        u = ((slots.astype(np.int64) + 1) * self.totals - 1) >> self.prob_bits
        index = np.searchsorted(cumulative, base + u, side="right").astype(np.int64)
        start, freq = self._interval_then_update(index, cumulative, base)
        return index - self.offsets, start, freq


class AdaptiveCoder(EntropyCoder):
    """Interleaved rANS with an adaptive frequency model per codebook (see the module doc).

    Args:
        cardinality: Entries per codebook ``n``, a power of two with ``n + 2 * increment``
            at most ``2^prob_bits``.
        num_codebooks: ``K``.
        increment: What coding a symbol adds to its count, in ``[1, 65535]``.
        prob_bits: ``P``, the precision of the scaled frequencies, at most 16.
        priors: Initial counts ``[K, n]`` (integers in ``[1, 65535]``, each row summing to at
            most ``2^prob_bits``), e.g. from :meth:`estimate_priors`; None for all ones.

    Raises:
        ValueError: Parameters outside these ranges.
    """

    coder_id: ClassVar[int] = 1
    name: ClassVar[str] = "adaptive"

    def __init__(
        self,
        cardinality: int,
        num_codebooks: int,
        *,
        increment: int = DEFAULT_INCREMENT,
        prob_bits: int = DEFAULT_PROB_BITS,
        priors: np.ndarray | None = None,
    ) -> None:
        super().__init__(cardinality, num_codebooks)
        if not is_int(prob_bits) or not 1 <= prob_bits <= 16:
            raise ValueError(f"prob_bits must be in [1, 16], got {prob_bits!r}")
        if not is_int(increment) or not 1 <= increment <= 0xFFFF:
            raise ValueError(f"increment must be in [1, 65535], got {increment!r}")
        # One halving must always make room for the next increment: (M + n) / 2 + inc <= M.
        if self.cardinality + 2 * increment > 1 << prob_bits:
            raise ValueError(
                f"cardinality {self.cardinality} + 2 * increment {increment} exceeds "
                f"2^prob_bits = {1 << prob_bits}"
            )
        self.increment = int(increment)
        self.prob_bits = int(prob_bits)
        self.priors = None if priors is None else self._check_priors(priors)
        self._raw = RawCoder(self.cardinality, self.num_codebooks)

    def _check_priors(self, priors: np.ndarray) -> np.ndarray:
        arr = np.asarray(priors)
        shape = (self.num_codebooks, self.cardinality)
        if arr.shape != shape:
            raise ValueError(f"priors must be {list(shape)}, got shape {list(arr.shape)}")
        if arr.dtype.kind not in "iu":
            raise ValueError(f"priors must be integers, got dtype {arr.dtype}")
        if arr.min() < 1 or arr.max() > 0xFFFF:
            raise ValueError("priors must be in [1, 65535]")
        sums = arr.astype(np.int64).sum(axis=1)
        if sums.max() > 1 << self.prob_bits:
            raise ValueError(
                f"priors rows must sum to at most 2^prob_bits = {1 << self.prob_bits}, "
                f"got {sums.max()}"
            )
        return arr.astype(np.uint16)

    def params(self) -> bytes:
        """``flags u8 | prob_bits u8 | increment u16 [| priors fingerprint, 8 bytes]``."""
        flags = 0 if self.priors is None else FLAG_PRIORS
        data = struct.pack(">BBH", flags, self.prob_bits, self.increment)
        return data if self.priors is None else data + priors_fingerprint(self.priors)

    @classmethod
    def from_params(
        cls,
        cardinality: int,
        num_codebooks: int,
        data: bytes,
        priors: np.ndarray | None = None,
    ) -> AdaptiveCoder:
        """The coder ``data`` describes; ``priors`` must be the ones it was made with.

        Raises:
            CorruptDataError: ``data`` has the wrong size.
            UnsupportedFormatError: Unknown flags, parameters out of range, priors missing
                or different (by fingerprint) from the stream's.
        """
        check_shape(cardinality, num_codebooks, UnsupportedFormatError)
        data = bytes(data)
        if len(data) < 4:
            raise CorruptDataError(f"adaptive coder parameters of {len(data)} bytes, need 4")
        flags, prob_bits, increment = struct.unpack(">BBH", data[:4])
        if flags & ~FLAG_PRIORS:
            raise UnsupportedFormatError(f"adaptive coder: unknown flags 0x{flags:02x}")
        expected = 4 + (FINGERPRINT_BYTES if flags & FLAG_PRIORS else 0)
        if len(data) != expected:
            raise CorruptDataError(
                f"adaptive coder parameters of {len(data)} bytes, expected {expected}"
            )
        if not flags & FLAG_PRIORS:
            priors = None  # the stream was made without: any priors given are not for it
        elif priors is None:
            raise UnsupportedFormatError(
                "the stream's adaptive coder needs static priors (from the model card); none given"
            )
        try:
            coder = cls(
                cardinality, num_codebooks, increment=increment, prob_bits=prob_bits, priors=priors
            )
        except ValueError as exc:
            what = "priors" if priors is not None and "priors" in str(exc) else "parameters"
            raise UnsupportedFormatError(f"adaptive coder {what}: {exc}") from None
        if coder.priors is not None and priors_fingerprint(coder.priors) != data[4:]:
            raise UnsupportedFormatError(
                "the stream was coded with other priors than the ones given (fingerprint differs)"
            )
        return coder

    def max_payload_size(self, num_frames: int) -> int:
        """``4K`` bytes of state plus at most one 16-bit word per code."""
        rans = self.num_codebooks * (STATE_BYTES + 2 * num_frames)
        return 1 + max(rans, self._raw.max_payload_size(num_frames))

    def _model(self) -> _Model:
        initial = np.ones((self.num_codebooks, self.cardinality), dtype=np.int64)
        if self.priors is not None:
            initial = self.priors
        return _Model(initial, self.increment, self.prob_bits)

    def encode(self, codes: np.ndarray) -> bytes:
        """The payload of ``codes`` ``[K, F]``: rANS, or raw packing where that is smaller."""
        codes = self.check_codes(codes)
        num_frames = codes.shape[1]
        # rANS codes backwards; the model runs forwards: record its intervals first.
        starts = np.empty((num_frames, self.num_codebooks), dtype=np.uint64)
        freqs = np.empty((num_frames, self.num_codebooks), dtype=np.uint64)
        model = self._model()
        frames = np.ascontiguousarray(codes.T)  # [F, K]: each step reads a contiguous row
        for t in range(num_frames):
            starts[t], freqs[t] = model.code(frames[t])
        coded = encode_lanes(starts, freqs, self.prob_bits)
        # An adaptive model pays to learn; on near-uniform codes raw packing is smaller.
        packed = self._raw.encode(codes)
        return MODE_RAW + packed if len(packed) <= len(coded) else MODE_RANS + coded

    def decode(self, payload: bytes, num_frames: int) -> np.ndarray:
        """The codes ``[K, num_frames]`` of a payload; CorruptDataError if it doesn't decode."""
        num_frames = self.check_num_frames(num_frames)
        mode, body = payload[:1], payload[1:]
        if mode == MODE_RAW:
            return self._raw.decode(body, num_frames)
        if mode != MODE_RANS:
            raise CorruptDataError(f"unknown adaptive payload mode {mode.hex() or '(empty)'}")
        lanes = LaneDecoder(body, self.num_codebooks, num_frames, self.prob_bits)
        model = self._model()
        out = np.empty((num_frames, self.num_codebooks), dtype=np.int64)
        for t in range(num_frames):
            slots = lanes.slots()
            out[t], start, freq = model.find(slots)
            lanes.advance(slots, start, freq)
        lanes.finish()
        return np.ascontiguousarray(out.T)

    @staticmethod
    def estimate_priors(
        codes_list: Iterable[np.ndarray],
        cardinality: int,
        *,
        budget: int = DEFAULT_PRIOR_BUDGET,
        smoothing: float = 0.5,
    ) -> np.ndarray:
        """Static priors from the token counts of a data set.

        Each codebook's distribution is estimated with additive smoothing,
        ``(count + smoothing) / (total + smoothing * n)``, and scaled so that its row sums to
        exactly ``budget`` with every entry at least 1 (one count each, the rest split in
        proportion, largest remainders first, ties to the lower code).

        Args:
            codes_list: Code arrays ``[K, F]`` or ``[B, K, F]`` (the same ``K``), numpy or
                anything ``np.asarray`` takes.
            cardinality: ``n``.
            budget: Row sum, in ``[n, 2^prob_bits]`` of the coder that will use the priors.
                Smaller leaves more weight to adaptation within a packet.
            smoothing: Added to every count, > 0.

        Returns:
            uint16 ``[K, n]``.

        Raises:
            ValueError: No codes, codes of different ``K`` or out of range, a bad budget.
        """
        check_shape(cardinality, 1)
        if not cardinality <= budget <= 1 << 16:
            raise ValueError(f"budget must be in [{cardinality}, 65536], got {budget}")
        if not smoothing > 0:
            raise ValueError(f"smoothing must be positive, got {smoothing}")
        counts: np.ndarray | None = None
        for codes in codes_list:
            arr = np.asarray(codes)
            if arr.ndim == 3:  # [B, K, F] -> [K, B * F]
                arr = arr.transpose(1, 0, 2).reshape(arr.shape[1], -1)
            if arr.ndim != 2 or arr.dtype.kind not in "iu":
                raise ValueError(f"codes must be integers [K, F], got {arr.dtype} {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= cardinality):
                raise ValueError(f"codes must be in [0, {cardinality})")
            num = arr.shape[0]
            if counts is None:
                counts = np.zeros((num, cardinality), dtype=np.float64)
            if counts.shape[0] != num:
                raise ValueError(f"codes of {num} codebooks after {counts.shape[0]}")
            # One bincount for all codebooks: codebook k's codes are shifted by k * n.
            lanes = np.arange(num, dtype=np.int64)[:, None] * cardinality
            flat = (lanes + arr.astype(np.int64)).reshape(-1)
            counts += np.bincount(flat, minlength=num * cardinality).reshape(num, cardinality)
        if counts is None:
            raise ValueError("estimate_priors needs at least one code array")
        probs = counts + smoothing
        probs /= probs.sum(axis=1, keepdims=True)
        spare = budget - cardinality  # what is left once every entry has its 1
        share = probs * spare
        whole = np.floor(share).astype(np.int64)
        short = spare - whole.sum(axis=1)  # < n per row: hand out by largest remainder
        order = np.argsort(-(share - whole), axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(cardinality)[None, :], axis=1)
        whole += ranks < short[:, None]
        return (whole + 1).astype(np.uint16)
