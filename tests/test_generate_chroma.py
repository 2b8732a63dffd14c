"""Chroma extraction (MusicGen-melody) without torchaudio or librosa.

References: transformers' ``audio_utils.chroma_filter_bank`` (a port of librosa's
``filters.chroma``) and ``audio_utils.spectrogram`` (numpy), and transformers'
``MusicgenMelodyFeatureExtractor._torch_extract_fbank_features`` (the chroma pipeline of
audiocraft), run with the numpy spectrogram standing in for torchaudio's, which is not
installed. A few filterbank values from librosa 0.11.0 itself are pinned below.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from transformers.audio_utils import chroma_filter_bank, spectrogram, window_function
from transformers.models.musicgen_melody.feature_extraction_musicgen_melody import (
    MusicgenMelodyFeatureExtractor,
)

from audiotok.generate.chroma import ChromaExtractor, Spectrogram, chroma_filterbank

SR = 32000

# librosa.filters.chroma(sr=32000, n_fft=16384, tuning=0, n_chroma=12)[row, bin], measured
# once with librosa 0.11.0 (float32, written as exact hex).
LIBROSA_VALUES = {
    (0, 0): "0x1.d5f3760000000p-22",
    (0, 16): "0x1.2b93400000000p-6",
    (9, 225): "0x1.bb77b40000000p-1",  # bin 225 is 439.5 Hz: A
    (9, 451): "0x1.f6ca7a0000000p-1",
    (3, 1000): "0x1.f651c40000000p-52",
    (11, 8192): "0x1.b4d9660000000p-4",
}


def test_filterbank_matches_librosa_values():
    fbanks = chroma_filterbank(SR, 16384)
    assert fbanks.shape == (12, 8193) and fbanks.dtype == np.float32
    for (row, col), value in LIBROSA_VALUES.items():
        assert fbanks[row, col] == np.float32(float.fromhex(value)), (row, col)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_chroma", "tuning", "norm", "octwidth", "base_c"),
    [
        (32000, 16384, 12, 0.0, 2.0, 2.0, True),
        (32000, 4096, 12, 0.0, 2.0, 2.0, True),
        (44100, 1000, 12, 0.0, 2.0, 2.0, True),
        (16000, 2048, 24, 0.3, np.inf, None, False),
        (22050, 512, 12, -0.2, 1.0, 1.5, True),
    ],
)
def test_filterbank_equals_transformers(
    sample_rate, n_fft, n_chroma, tuning, norm, octwidth, base_c
):
    ours = chroma_filterbank(sample_rate, n_fft, n_chroma, tuning, 5.0, octwidth, norm, base_c)
    theirs = chroma_filter_bank(
        num_frequency_bins=n_fft,
        num_chroma=n_chroma,
        sampling_rate=sample_rate,
        tuning=tuning,
        power=None if norm == np.inf else norm,
        weighting_parameters=None if octwidth is None else (5.0, octwidth),
        start_at_c_chroma=base_c,
    )
    if norm == np.inf:  # transformers' port has p-norms only (and no weighting follows here)
        theirs = theirs / theirs.max(axis=0, keepdims=True)
    assert np.array_equal(ours, theirs.astype(np.float32))


def numpy_power_spectrogram(
    wav: torch.Tensor, n_fft: int, win_length: int, hop: int
) -> torch.Tensor:
    """torchaudio's ``Spectrogram(power=2, normalized=True)`` from transformers' numpy STFT."""
    window = window_function(win_length, "hann", periodic=True, frame_length=n_fft)
    rows = [
        spectrogram(
            row.double().numpy(), window, n_fft, hop, power=2.0, center=True, pad_mode="reflect"
        )
        / (window**2).sum()
        for row in wav.reshape(-1, wav.shape[-1])
    ]
    out = torch.from_numpy(np.stack(rows)).float()
    return out.reshape(*wav.shape[:-1], *out.shape[-2:])


@pytest.mark.parametrize(("n_fft", "win_length", "hop"), [(512, 512, 128), (1024, 1024, 300)])
def test_spectrogram_equals_numpy_reference(n_fft, win_length, hop):
    wav = torch.randn(2, 1, 5000, generator=torch.Generator().manual_seed(0))
    ours = Spectrogram(n_fft, win_length, hop)(wav)
    theirs = numpy_power_spectrogram(wav, n_fft, win_length, hop)
    assert ours.shape == theirs.shape == (2, 1, n_fft // 2 + 1, 1 + 5000 // hop)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.max()))


def melody(seconds: float, seed: int = 0) -> torch.Tensor:
    """``[2, 1, T]`` at 32 kHz: notes with harmonics, a quarter second each, and some noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    notes = 220.0 * 2 ** (torch.randint(0, 24, (2, int(seconds * 4) + 1), generator=generator) / 12)
    f0 = notes.repeat_interleave(SR // 4, dim=1)[:, : t.numel()]
    phase = 2 * torch.pi * torch.cumsum(f0 / SR, dim=1)
    wav = sum(torch.sin(k * phase) / k for k in (1, 2, 3))
    return (wav + 0.05 * torch.randn(wav.shape, generator=generator))[:, None]


@pytest.mark.parametrize("seconds", [0.1, 2.0])  # 0.1 s is shorter than the window: padded
def test_argmax_chroma_equals_transformers_pipeline(seconds):
    n_fft, hop = 16384, 4096
    reference = types.SimpleNamespace(
        n_fft=n_fft,
        spectrogram=lambda wav: numpy_power_spectrogram(wav, n_fft, n_fft, hop),
        chroma_filters=torch.from_numpy(chroma_filter_bank(n_fft, 12, SR, tuning=0)).float(),
    )
    wav = melody(seconds)
    theirs = MusicgenMelodyFeatureExtractor._torch_extract_fbank_features(reference, wav[:, 0])
    extractor = ChromaExtractor(SR, n_chroma=12, radix2_exp=14, argmax=True)
    ours = extractor(wav)
    assert ours.shape == theirs.shape == (2, 1 + max(wav.shape[-1], n_fft) // hop, 12)
    assert torch.equal(ours, theirs)
    assert bool((ours.sum(-1) == 1).all())


def test_normalised_chroma_equals_reference():
    extractor = ChromaExtractor(SR, radix2_exp=12)  # audiocraft's defaults: no argmax
    wav = melody(1.0, seed=1)
    ours = extractor(wav)
    spec = numpy_power_spectrogram(wav, 4096, 4096, 1024)[:, 0]
    raw = torch.einsum(
        "cf,bft->btc", torch.from_numpy(chroma_filter_bank(4096, 12, SR)).float(), spec
    )
    expected = raw / raw.amax(-1, keepdim=True)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert ours.shape == (2, 1 + SR // 1024, 12)


@pytest.mark.parametrize(("frequency", "pitch_class"), [(440.0, 9), (261.63, 0), (392.0, 7)])
def test_a_pure_tone_gives_its_pitch_class(frequency, pitch_class):
    wav = torch.sin(2 * torch.pi * frequency * torch.arange(SR) / SR)[None, None]
    chroma = ChromaExtractor(SR, radix2_exp=14, argmax=True)(wav)
    assert chroma[0].argmax(-1).tolist() == [pitch_class] * chroma.shape[1]


def test_channels_and_sample_rate_are_converted():
    extractor = ChromaExtractor(SR, radix2_exp=12, argmax=True)
    mono = melody(1.0)
    stereo = mono.repeat(1, 2, 1)
    assert torch.equal(extractor(stereo), extractor(mono))
    assert torch.equal(extractor(mono[:, 0]), extractor(mono))  # [B, T] is mono
    half_rate = mono[..., ::2].contiguous()
    assert extractor(half_rate, sample_rate=SR // 2).shape == (2, 1 + SR // 1024, 12)
    with pytest.raises(ValueError, match="B, C, T"):
        extractor(torch.zeros(SR))


def test_state_dict_has_audiocraft_keys():
    # the official MusicGen-melody checkpoint stores `...self_wav.chroma.spec.window`
    extractor = ChromaExtractor(SR, radix2_exp=14)
    assert list(extractor.state_dict()) == ["spec.window"]
    extractor.load_state_dict({"spec.window": torch.hann_window(16384)})
    assert extractor.winlen == extractor.nfft == 16384 and extractor.winhop == 4096
    assert extractor.fbanks.shape == (12, 8193)
