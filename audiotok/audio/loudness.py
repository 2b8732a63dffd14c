"""Integrated loudness by ITU-R BS.1770-4, in numpy only (no scipy, no torchaudio).

The K-weighting biquads are designed for any sample rate from the analogue prototypes' parameters,
as torchaudio and pyloudnorm do: a +4 dB high shelf at 1500 Hz with Q = 1/sqrt(2), then the RLB
high pass at 38 Hz with Q = 0.5. Instead of running the IIR recurrences sample by sample, the
cascade is applied as an FFT convolution with its impulse response, computed from the exact
frequency response and truncated where it has decayed below 1e-12. That equals the IIR filtering
from a zero state to about 1e-10, without a per-sample Python loop.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import AudioError

# Channel weights for L, R, C, Ls, Rs, in torchaudio's order; an LFE channel is not supported.
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
BLOCK_SECONDS = 0.4
HOP_SECONDS = 0.1  # 75 % overlap
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
_DECAYED = 1e-12


def k_weighting_biquads(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting biquads for a sample rate.

    Args:
        sample_rate: In Hz.

    Returns:
        ``[(b, a), (b, a)]`` for the high shelf, then the high pass; each ``b`` and ``a`` is
        ``[3]``, coefficients of z^0, z^-1, z^-2, not normalised (``a[0] != 1``).
    """
    w0 = 2 * math.pi * 1500.0 / sample_rate
    gain = 10 ** (4.0 / 40)  # the shelf's A: the square root of its linear gain
    alpha, cos = math.sin(w0) / (2 / math.sqrt(2)), math.cos(w0)
    root = 2 * math.sqrt(gain) * alpha
    shelf_b = [
        gain * ((gain + 1) + (gain - 1) * cos + root),
        -2 * gain * ((gain - 1) + (gain + 1) * cos),
        gain * ((gain + 1) + (gain - 1) * cos - root),
    ]
    shelf_a = [
        (gain + 1) - (gain - 1) * cos + root,
        2 * ((gain - 1) - (gain + 1) * cos),
        (gain + 1) - (gain - 1) * cos - root,
    ]
    w0 = 2 * math.pi * 38.0 / sample_rate
    alpha, cos = math.sin(w0) / (2 * 0.5), math.cos(w0)
    high_pass_b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
    high_pass_a = [1 + alpha, -2 * cos, 1 - alpha]
    return [(np.array(shelf_b), np.array(shelf_a)), (np.array(high_pass_b), np.array(high_pass_a))]


def k_weighting_impulse_response(sample_rate: int) -> np.ndarray:
    """The K-weighting cascade's impulse response, up to where it has decayed for good.

    Args:
        sample_rate: In Hz.

    Returns:
        ``[L]`` float64, with every later sample of the true response below 1e-12 in magnitude.
    """
    biquads = k_weighting_biquads(sample_rate)
    radius = max(float(np.abs(np.roots(a)).max()) for _, a in biquads)
    # Each biquad has poles of multiplicity <= 2, so the response is bounded by ~ n^2 radius^n.
    length = 64
    while (length + 1) ** 2 * radius**length > _DECAYED:
        length = int(length * 1.25)
    # Sampling the exact frequency response on a grid of n points gives the response aliased
    # with period n; with n >= 2 * length the aliased terms are below the threshold too.
    n = 1 << (2 * length).bit_length()
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(n))
    response = np.ones_like(z)
    for b, a in biquads:
        response *= np.polyval(b[::-1], z) / np.polyval(a[::-1], z)
    return np.fft.irfft(response, n)[:length]


def k_weight(
    x: np.ndarray, sample_rate: int, h: np.ndarray | None = None, full: bool = False
) -> np.ndarray:
    """K-weights signals along their last axis.

    Args:
        x: Signals ``[..., T]``.
        sample_rate: Their sample rate in Hz.
        h: The cascade's impulse response, if already computed for ``sample_rate``.
        full: Whether to return the whole convolution, tail included (``[..., T + L - 1]``
            for a response of ``L`` samples), for signals continued in the next call.

    Returns:
        ``[..., T]`` float64: what the two biquads give from a zero initial state, to ~1e-10.
    """
    h = k_weighting_impulse_response(sample_rate) if h is None else h
    # Overlap-add FFT convolution: blocks of `step` samples, each followed by a tail shorter
    # than the next block. Blocks keep the FFTs small (one FFT of a long signal is slower).
    n_fft = 1 << (8 * len(h)).bit_length()
    step = n_fft - len(h) + 1
    length = x.shape[-1]
    blocks = -(-length // step)
    padded = np.zeros((*x.shape[:-1], blocks * step))
    padded[..., :length] = x
    frames = padded.reshape(*x.shape[:-1], blocks, step)
    spectra = np.fft.rfft(frames, n_fft)
    spectra *= np.fft.rfft(h, n_fft)
    y = np.fft.irfft(spectra, n_fft)
    out = y[..., :step].copy()
    out[..., 1:, : n_fft - step] += y[..., :-1, step:]
    out = out.reshape(*x.shape[:-1], blocks * step)
    if not full:
        return out[..., :length]
    return np.concatenate([out, y[..., -1, step:]], axis=-1)[..., : length + len(h) - 1]


class LoudnessMeter:
    """Integrated loudness of a signal given in blocks of any size (bounded memory).

    The K-weighting runs as an overlap-add FIR convolution that carries its tail from block to
    block; the block energies come from a running sum of the K-weighted power, read at the
    400 ms gating blocks' edges (so the sums over blocks are differences of two numbers, not
    sums over 400 ms each). Fed the whole signal at once or in pieces, it gives the same figure
    to float64 rounding.

    Example:
        >>> meter = LoudnessMeter(48_000, channels=2)              # doctest: +SKIP
        >>> for block in blocks:                                  # [2, n], any n
        ...     meter.add(block)
        >>> meter.loudness()                                      # LUFS
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        if not 1 <= channels <= len(CHANNEL_WEIGHTS):
            raise AudioError(f"loudness needs 1 to {len(CHANNEL_WEIGHTS)} channels, got {channels}")
        self.sample_rate, self.channels = sample_rate, channels
        self.block = int(BLOCK_SECONDS * sample_rate)
        self.hop = int(HOP_SECONDS * sample_rate)
        self._h = k_weighting_impulse_response(sample_rate)
        # Small pieces wait for company: each filtering pass costs FFTs of >= 8 x len(h).
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._tail = np.zeros((channels, len(self._h) - 1))  # owed to the next samples
        self._seen = 0  # samples received
        self._total = np.zeros(channels)  # running sum of the power up to `_seen`
        # The running sum at each gating block's start and end (sample index -> sums [C]).
        self._marks: dict[int, np.ndarray] = {0: np.zeros(channels)}

    def add(self, wav: np.ndarray) -> None:
        """Feeds the next samples ``[C, n]``."""
        x = np.asarray(wav, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise AudioError(f"expected [{self.channels}, n] audio, got {list(x.shape)}")
        self._pending.append(x)
        self._pending_samples += x.shape[1]
        if self._pending_samples >= 8 * len(self._h):
            self._flush()

    def _flush(self) -> None:
        x = np.concatenate(self._pending, axis=1)
        self._pending, self._pending_samples = [], 0
        n = x.shape[1]
        if n == 0:
            return
        y = k_weight(x, self.sample_rate, self._h, full=True)  # [C, n + len(h) - 1]
        y[:, : self._tail.shape[1]] += self._tail
        self._tail, y = y[:, n:], y[:, :n]
        cumsum = self._total[:, None] + np.cumsum(y**2, axis=-1)
        first, last = self._seen + 1, self._seen + n
        # Positions p in (seen, seen + n] where a gating block starts or ends.
        for offset in (0, self.block):
            lo = max(0, -(-(first - offset) // self.hop))
            for p in range(lo * self.hop + offset, last + 1, self.hop):
                self._marks[p] = cumsum[:, p - self._seen - 1]
        self._total = cumsum[:, -1]
        self._seen = last

    def loudness(self) -> float:
        """The integrated loudness of what was fed, in LUFS (``-inf`` below the gate).

        Raises:
            AudioError: Nothing was fed.
        """
        if self._pending:
            self._flush()
        if self._seen == 0:
            raise AudioError("loudness needs some samples")
        if self._seen < self.block:  # a signal shorter than one block is one block
            energy = (self._total / self._seen)[:, None]
        else:
            starts = range(0, self._seen - self.block + 1, self.hop)
            energy = np.stack(
                [(self._marks[s + self.block] - self._marks[s]) / self.block for s in starts],
                axis=-1,
            )
        return gated_loudness(energy)


def gated_loudness(energy: np.ndarray) -> float:
    """BS.1770 gating of block mean squares ``[C, blocks]``: the loudness in LUFS."""
    weights = np.array(CHANNEL_WEIGHTS[: energy.shape[0]])[:, None]

    def lufs(mean_squares: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):  # silence is -inf LUFS
            return -0.691 + 10 * np.log10((weights * mean_squares).sum(axis=0))

    block_lufs = lufs(energy)
    gated = block_lufs > ABSOLUTE_GATE_LUFS
    if not gated.any():
        return -math.inf
    relative_gate = lufs(energy[:, gated].mean(axis=-1, keepdims=True))[0] + RELATIVE_GATE_LU
    gated &= block_lufs > relative_gate
    return float(lufs(energy[:, gated].mean(axis=-1, keepdims=True))[0])


def integrated_loudness(wav: np.ndarray, sample_rate: int) -> float:
    """The integrated loudness of audio, in LUFS (what torchaudio's ``loudness`` computes).

    Mean squares of the K-weighted channels over 400 ms blocks every 100 ms, weighted by
    :data:`CHANNEL_WEIGHTS`; blocks below -70 LUFS are dropped, then blocks 10 LU below the
    loudness of the rest. Unlike torchaudio, the K-weighted signal is not clamped to [-1, 1],
    which BS.1770 does not do either, and a signal shorter than one block counts as one block
    (torchaudio gives NaN). (For signals read in
    blocks, :class:`LoudnessMeter`, which this uses.)

    Args:
        wav: Finite audio ``[C, T]`` with 1 to 5 channels (a numpy array or a CPU tensor).
        sample_rate: Its sample rate in Hz.

    Returns:
        The loudness in LUFS; ``-inf`` if every block is below the absolute gate.

    Raises:
        AudioError: If ``wav`` is not ``[C, T]`` with 1 to 5 channels and some samples.
    """
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 2 or not 1 <= x.shape[0] <= len(CHANNEL_WEIGHTS) or x.shape[1] == 0:
        raise AudioError(f"loudness needs audio [C, T] with 1 <= C <= 5, got {list(x.shape)}")
    meter = LoudnessMeter(sample_rate, x.shape[0])
    meter.add(x)
    return meter.loudness()
