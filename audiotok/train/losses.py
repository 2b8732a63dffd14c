"""Reconstruction and adversarial losses of EnCodec, and the metrics we report.

* :class:`MultiScaleMelLoss`: audiocraft's ``MultiScaleMelSpectrogramLoss``, L1 on mel
  spectrograms plus L2 on their logarithm, at FFT sizes 64 ... 1024, with the settings of
  audiocraft's EnCodec recipe (``normalized: true, alphas: false, f_min: 64``).
* :class:`LogMelL1Loss`: DAC's ``MelSpectrogramLoss`` as its recipe sets it: L1 of log10
  mel magnitudes at window lengths 32 ... 2048 (5 ... 320 bands), floor 1e-5, unnormalised.
* :func:`mel_distance`: the quality metric: mean L1 distance of log10 mel spectrograms at
  FFT sizes 512, 1024 and 2048 (80 bands), lower is better.
* :func:`si_sdr`: scale-invariant signal-to-distortion ratio in dB, higher is better.
* :func:`hinge_generator_loss`, :func:`hinge_discriminator_loss`,
  :func:`feature_matching_loss`: the adversarial terms.

No torchaudio: the mel filterbank is built here (HTK mel scale, no filter normalisation,
as torchaudio's ``MelSpectrogram`` defaults; ``tests/test_train.py`` checks it against
transformers' copy of torchaudio's filterbank).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=64)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0) -> Tensor:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` from ``f_min`` to Nyquist (HTK)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    bottom = float(_hz_to_mel(torch.tensor(f_min, dtype=torch.float64)))
    top = float(_hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64)))
    points = _mel_to_hz(torch.linspace(bottom, top, n_mels + 2, dtype=torch.float64))
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def mel_spectrogram(
    x: Tensor,
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    normalized: bool = False,
    magnitude: bool = False,
) -> Tensor:
    """Power mel spectrogram of ``x`` ``[B, C, T]``: ``[B, C, n_mels, frames]``.

    Hop ``n_fft // 4``, Hann window, reflect padding of ``(n_fft - hop) / 2`` on each side
    no centring and zeros up to a whole last frame, as audiocraft's
    ``MelSpectrogramWrapper``. ``normalized`` divides the
    power by the window's energy, as torchaudio's ``Spectrogram(normalized=True)``: without
    it the power grows with ``n_fft`` and the largest FFT dominates a multi-scale sum.
    ``magnitude`` filters the STFT's magnitude instead of its power, as DAC's loss does.
    """
    hop = n_fft // 4
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    pad = (n_fft - hop) // 2
    flat = F.pad(flat[:, None], (pad, pad), mode="reflect")[:, 0]
    # Zeros up to a whole last frame, as audiocraft's pad_for_conv1d: ceil(T / hop) frames.
    frames = math.ceil(max(flat.shape[-1] - n_fft, 0) / hop) + 1
    flat = F.pad(flat, (0, (frames - 1) * hop + n_fft - flat.shape[-1]))
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(flat, n_fft, hop, window=window, center=False, return_complex=True)
    power = spec.real.square() + spec.imag.square()
    if magnitude:
        # The square root's gradient is infinite at 0: a floor far below any audible level.
        power = (power + 1e-18).sqrt()
    if normalized:
        power = power / window.square().sum()
    mel = mel_filterbank(sample_rate, n_fft, n_mels, f_min).to(x.device, x.dtype) @ power
    return mel.view(*shape[:-1], n_mels, -1)


class MultiScaleMelLoss(nn.Module):
    """Sum over FFT sizes ``2**i`` of ``L1(mel) + alpha_i * MSE(log10(floor + mel))``.

    audiocraft's ``MultiScaleMelSpectrogramLoss``; the defaults are the settings of its
    EnCodec recipe (``config/solver/compression/default.yaml``, ``msspec``): FFT 64 to 1024,
    64 bands from 64 Hz, window-normalised spectrograms, ``alpha_i = 1`` and the sum divided by
    the number of terms. With ``alphas=True`` the log term of scale ``i`` is weighted by
    ``sqrt(2**i - 1)`` (up to 32 at FFT 1024), which makes the loss, and its gradient, tens
    of times larger than a waveform L1 on the same audio.

    Args:
        sample_rate: Audio rate.
        range_start: Smallest FFT size, as a power of two (6 -> 64).
        range_end: One past the largest (11 -> up to 1024).
        n_mels: Mel bands at every scale.
        f_min: Lowest mel frequency (Hz).
        normalized: Window-normalised spectrograms and the sum divided by its weights' total.
        alphas: Weight the log terms by ``sqrt(2**i - 1)`` instead of 1.
        floor: Added to the mel power before the logarithm.
    """

    def __init__(
        self,
        sample_rate: int,
        range_start: int = 6,
        range_end: int = 11,
        n_mels: int = 64,
        f_min: float = 64.0,
        normalized: bool = True,
        alphas: bool = False,
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        self.sample_rate, self.n_mels, self.floor = sample_rate, n_mels, floor
        self.f_min, self.normalized = f_min, normalized
        self.ffts = [2**i for i in range(range_start, range_end)]
        self.alphas = [
            math.sqrt(2**i - 1) if alphas else 1.0 for i in range(range_start, range_end)
        ]
        self.total = sum(a + 1 for a in self.alphas)

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        """Loss between two signals ``[B, C, T]`` (a scalar)."""
        total = estimate.new_zeros(())
        for n_fft, alpha in zip(self.ffts, self.alphas, strict=True):
            args = (self.sample_rate, n_fft, self.n_mels, self.f_min, self.normalized)
            mel_x = mel_spectrogram(estimate, *args)
            mel_y = mel_spectrogram(reference, *args)
            total = total + F.l1_loss(mel_x, mel_y)
            log_x = torch.log10(mel_x + self.floor)
            log_y = torch.log10(mel_y + self.floor)
            total = total + alpha * F.mse_loss(log_x, log_y)
        return total / self.total if self.normalized else total


class LogMelL1Loss(nn.Module):
    """Sum over window lengths of ``L1(log10(max(mel, floor)))``, mel of STFT magnitudes.

    DAC's ``MelSpectrogramLoss`` with the settings of its recipe (``conf/base.yml``: window
    lengths 32 to 2048, 5 to 320 bands, ``mel_fmin`` 0, ``pow`` 1, ``clamp_eps`` 1e-5,
    ``mag_weight`` 0), on our HTK filterbank and :func:`mel_spectrogram`'s framing (DAC's
    audiotools uses librosa's Slaney filters and its own padding).
    Unlike :class:`MultiScaleMelLoss` the spectrograms are not window-normalised and the log
    is compared by L1, not L2: a band 80 dB below the signal still costs in proportion to
    its log error, so noise in a band the input leaves empty (speech recorded at 16 kHz) or
    in a pause is seen, as :func:`mel_distance` sees it.

    Args:
        sample_rate: Audio rate.
        window_lengths: STFT sizes (hop a quarter of each).
        n_mels: Bands at each size.
        floor: Clamp on the mel magnitude before the logarithm.
    """

    def __init__(
        self,
        sample_rate: int,
        window_lengths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320),
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError("LogMelL1Loss: one band count per window length")
        self.sample_rate, self.floor = sample_rate, floor
        self.scales = list(zip(window_lengths, n_mels, strict=True))

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        """Loss between two signals ``[B, C, T]`` (a scalar)."""
        total = estimate.new_zeros(())
        for n_fft, n_mels in self.scales:
            log_x, log_y = (
                mel_spectrogram(x, self.sample_rate, n_fft, n_mels, magnitude=True)
                .clamp(min=self.floor)
                .log10()
                for x in (estimate, reference)
            )
            total = total + F.l1_loss(log_x, log_y)
        return total


def mel_distance(estimate: Tensor, reference: Tensor, sample_rate: int) -> Tensor:
    """Mean L1 of log10 mel spectrograms at FFT sizes 512, 1024, 2048 (80 bands), per item.

    Args:
        estimate: Decoded audio ``[B, C, T]``.
        reference: Original audio ``[B, C, T]``.
        sample_rate: Their rate.

    Returns:
        ``[B]``; 0 for identical signals.
    """
    distances = []
    for n_fft in (512, 1024, 2048):
        mel_x = mel_spectrogram(estimate, sample_rate, n_fft, 80).clamp(min=1e-5).log10()
        mel_y = mel_spectrogram(reference, sample_rate, n_fft, 80).clamp(min=1e-5).log10()
        distances.append((mel_x - mel_y).abs().flatten(1).mean(dim=1))
    return torch.stack(distances).mean(dim=0)


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB of ``estimate`` against ``reference`` ``[B, C, T]``: ``[B]``."""
    x = estimate.flatten(1).double()
    y = reference.flatten(1).double()
    x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    scale = (x * y).sum(dim=1, keepdim=True) / (y.square().sum(dim=1, keepdim=True) + eps)
    target = scale * y
    noise = x - target
    ratio = (target.square().sum(dim=1) + eps) / (noise.square().sum(dim=1) + eps)
    return (10 * torch.log10(ratio)).float()


def hinge_generator_loss(fake_logits: list[Tensor]) -> Tensor:
    """Generator hinge loss: ``mean(relu(1 - D(fake)))`` averaged over discriminators."""
    return torch.stack([F.relu(1 - logits).mean() for logits in fake_logits]).mean()


def hinge_discriminator_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
    """Discriminator hinge loss: ``relu(1 - D(real)) + relu(1 + D(fake))``, averaged."""
    losses = [
        F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        for real, fake in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(losses).mean()


def feature_matching_loss(
    fake_features: list[list[Tensor]], real_features: list[list[Tensor]]
) -> Tensor:
    """L1 between discriminator features, each divided by the real features' mean magnitude."""
    terms = []
    for fakes, reals in zip(fake_features, real_features, strict=True):
        for fake, real in zip(fakes, reals, strict=True):
            real = real.detach()
            terms.append(F.l1_loss(fake, real) / (real.abs().mean() + 1e-8))
    return torch.stack(terms).mean()
