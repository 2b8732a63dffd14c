"""Chroma features for MusicGen-melody conditioning, as audiocraft's ``modules/chroma.py``.

audiocraft's ``ChromaExtractor`` needs torchaudio (``transforms.Spectrogram``) and librosa
(``filters.chroma``); this module has neither: :class:`Spectrogram` is torchaudio's
``Spectrogram(power=2, normalized=True, center=True, pad_mode="reflect")`` with the same
``torch.stft`` call, and :func:`chroma_filterbank` is librosa's ``filters.chroma`` with the
same numpy operations. Module and buffer names follow audiocraft, so the official
checkpoint's ``...self_wav.chroma.spec.window`` loads with a plain ``load_state_dict``.

MusicGen-melody (``conditioners.self_wav.chroma_stem`` in its config) uses
``sample_rate=32000, n_chroma=12, radix2_exp=14, argmax=True``: a window and FFT of 16384
samples, a hop of 4096 (128 ms), and a one-hot of the dominant pitch class per frame.

Example::

    >>> extractor = ChromaExtractor(32000, radix2_exp=14, argmax=True)
    >>> wav = torch.randn(2, 1, 32000)            # [B, C, T], 1 s at 32 kHz
    >>> extractor(wav).shape                      # [B, frames = 1 + T // 4096, 12]
    torch.Size([2, 8, 12])
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio.read import convert_audio
from ..errors import AudioError


def chroma_filterbank(
    sample_rate: int,
    n_fft: int,
    n_chroma: int = 12,
    tuning: float = 0.0,
    ctroct: float = 5.0,
    octwidth: float | None = 2.0,
    norm: float | None = 2.0,
    base_c: bool = True,
) -> np.ndarray:
    """librosa's ``filters.chroma``: a matrix projecting FFT bins onto pitch classes.

    Each FFT bin ``f`` is placed at ``n_chroma * log2(f / 27.5 Hz)`` (27.5 Hz = A0 at
    ``tuning = 0``); each row is a Gaussian bump around one pitch class, repeated every
    octave, each column is ``norm``-normalised, and a Gaussian over octaves centred on
    ``ctroct`` (octaves above A0) with half-width ``octwidth`` weights the columns.

    Args:
        sample_rate: Sample rate of the signal, Hz.
        n_fft: FFT size.
        n_chroma: Number of pitch classes.
        tuning: Deviation from A440 in fractions of a chroma bin.
        ctroct: Centre of the octave weighting, in octaves above A0.
        octwidth: Half-width of the octave weighting in octaves; None for flat weighting.
        norm: Norm each column is divided by (``np.inf`` allowed); None for none.
        base_c: Start the rows at C (else at A).

    Returns:
        float32 ``[n_chroma, 1 + n_fft // 2]``.
    """
    frequencies = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    frqbins = n_chroma * np.log2(frequencies / (float(a440) / 16))
    # Make up a value for the 0 Hz bin: 1.5 octaves below bin 1.
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    distance = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    n_chroma2 = np.round(float(n_chroma) / 2)
    # Into -n_chroma/2 .. n_chroma/2; the 10 * n_chroma offset keeps remainder's input positive.
    distance = np.remainder(distance + n_chroma2 + 10 * n_chroma, n_chroma) - n_chroma2
    wts = np.exp(-0.5 * (2 * distance / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    if norm is not None:
        wts = wts / _column_norms(wts, norm)
    if octwidth is not None:
        wts *= np.tile(
            np.exp(-0.5 * (((frqbins / n_chroma - ctroct) / octwidth) ** 2)), (n_chroma, 1)
        )
    if base_c:
        wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(wts[:, : int(1 + n_fft / 2)], dtype=np.float32)


def _column_norms(wts: np.ndarray, norm: float) -> np.ndarray:
    """librosa's ``util.normalize`` lengths along axis 0 (columns too small stay as they are)."""
    mag = np.abs(wts).astype(float)
    if norm == np.inf:
        length = np.max(mag, axis=0, keepdims=True)
    else:
        length = np.sum(mag**norm, axis=0, keepdims=True) ** (1.0 / norm)
    length[length < np.finfo(mag.dtype).tiny] = 1.0
    return length


class Spectrogram(nn.Module):
    """torchaudio's ``Spectrogram(power=2, normalized=True, center=True, pad=0)``.

    A periodic Hann window of ``win_length``, reflect padding of ``n_fft // 2`` on each side,
    the one-sided STFT divided by the window's L2 norm, then squared magnitude.

    Args:
        n_fft: FFT size.
        win_length: Window length (at most ``n_fft``).
        hop_length: Hop between frames.
    """

    window: torch.Tensor

    def __init__(self, n_fft: int, win_length: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        # Persistent, as in torchaudio: the official MusicGen-melody checkpoint stores it.
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Power spectrogram of ``wav`` ``[..., T]``, ``T > n_fft // 2``.

        Returns:
            ``[..., n_fft // 2 + 1, frames]`` with ``frames = 1 + T // hop_length``.
        """
        shape = wav.shape
        spec = torch.stft(
            wav.reshape(-1, shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        spec /= self.window.pow(2.0).sum().sqrt()
        return spec.abs().pow(2.0)


class ChromaExtractor(nn.Module):
    """Chroma extraction and quantisation, as audiocraft's ``ChromaExtractor``.

    Args:
        sample_rate: Sample rate the chroma is computed at, Hz.
        n_chroma: Number of pitch classes.
        radix2_exp: Window length ``2 ** radix2_exp`` when ``winlen`` is not given.
        nfft: FFT size; default ``winlen``.
        winlen: Window length; default ``2 ** radix2_exp``.
        winhop: Hop; default ``winlen // 4``.
        argmax: Replace each frame by a one-hot of its largest pitch class.
        norm: Norm of each frame's normalisation (``inf``: divide by the maximum).
    """

    fbanks: torch.Tensor

    def __init__(
        self,
        sample_rate: int,
        n_chroma: int = 12,
        radix2_exp: int = 12,
        nfft: int | None = None,
        winlen: int | None = None,
        winhop: int | None = None,
        argmax: bool = False,
        norm: float = math.inf,
    ) -> None:
        super().__init__()
        self.winlen = winlen or 2**radix2_exp
        self.nfft = nfft or self.winlen
        self.winhop = winhop or (self.winlen // 4)
        self.sample_rate = sample_rate
        self.n_chroma = n_chroma
        self.norm = norm
        self.argmax = argmax
        fbanks = chroma_filterbank(sample_rate, self.nfft, n_chroma=n_chroma, tuning=0)
        self.register_buffer("fbanks", torch.from_numpy(fbanks), persistent=False)
        self.spec = Spectrogram(self.nfft, self.winlen, self.winhop)

    def forward(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Chroma of a batch of signals.

        Args:
            wav: ``[B, C, T]`` (or ``[B, T]``). Several channels are averaged and a
                ``sample_rate`` other than the extractor's is resampled (soxr, where
                audiocraft's callers use julius) before the extraction.
            sample_rate: Rate of ``wav`` in Hz; default the extractor's.

        Returns:
            float32 ``[B, frames, n_chroma]``, ``frames = 1 + max(T', nfft) // winhop`` with
            ``T'`` the length at the extractor's rate; each frame has maximum 1 (norm inf),
            or is one-hot with ``argmax``.
        """
        if wav.dim() == 2:
            wav = wav[:, None]
        if wav.dim() != 3:
            raise AudioError(f"chroma needs audio [B, C, T], got shape {list(wav.shape)}")
        if wav.shape[1] != 1 or (sample_rate or self.sample_rate) != self.sample_rate:
            wav = convert_audio(wav, sample_rate or self.sample_rate, self.sample_rate, 1)
        length = wav.shape[-1]
        # Short (e.g. nullified, 1-sample) conditions are zero-padded to one window.
        if length < self.nfft:
            pad = self.nfft - length
            wav = F.pad(wav, (pad // 2, pad // 2 + pad % 2), "constant", 0)
        spec = self.spec(wav).squeeze(1)  # [B, F, frames]
        raw_chroma = torch.einsum("cf,...ft->...ct", self.fbanks, spec)
        norm_chroma = F.normalize(raw_chroma, p=self.norm, dim=-2, eps=1e-6)
        norm_chroma = norm_chroma.transpose(1, 2)  # [B, frames, n_chroma]
        if self.argmax:
            idx = norm_chroma.argmax(-1, keepdim=True)
            norm_chroma = torch.zeros_like(norm_chroma).scatter_(-1, idx, 1.0)
        return norm_chroma
