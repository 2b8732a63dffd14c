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

from audiotok.errors import AudioError

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


def k_weight(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """K-weights signals along their last axis.

    Args:
        x: Signals ``[..., T]``.
        sample_rate: Their sample rate in Hz.

    Returns:
        ``[..., T]`` float64: what the two biquads give from a zero initial state, to ~1e-10.
    """
    h = k_weighting_impulse_response(sample_rate)
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
    return out.reshape(*x.shape[:-1], blocks * step)[..., :length]


def integrated_loudness(wav: np.ndarray, sample_rate: int) -> float:
    """The integrated loudness of audio, in LUFS (what torchaudio's ``loudness`` computes).

    Mean squares of the K-weighted channels over 400 ms blocks every 100 ms (a signal shorter
    than one block is one block), weighted by :data:`CHANNEL_WEIGHTS`; blocks below -70 LUFS are
    dropped, then blocks 10 LU below the loudness of the rest. Unlike torchaudio, the K-weighted
    signal is not clamped to [-1, 1], which BS.1770 does not do either.

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
    power = k_weight(x, sample_rate) ** 2
    block, hop = int(BLOCK_SECONDS * sample_rate), int(HOP_SECONDS * sample_rate)
    if x.shape[1] < block:
        energy = power.mean(axis=-1, keepdims=True)
    else:
        # Block sums as differences of a running sum: O(T) instead of O(T * block).
        cumsum = np.concatenate([np.zeros((x.shape[0], 1)), power.cumsum(axis=-1)], axis=-1)
        starts = np.arange(0, x.shape[1] - block + 1, hop)
        energy = (cumsum[:, starts + block] - cumsum[:, starts]) / block
    weights = np.array(CHANNEL_WEIGHTS[: x.shape[0]])[:, None]

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
