"""Tests of audiotok.audio: reading, conversion, loudness, normalisation, writing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiotok.audio.loudness import integrated_loudness, k_weight, k_weighting_biquads
from audiotok.audio.read import check_audio, convert_audio, read_audio
from audiotok.audio.write import audio_write, normalize_audio, write_audio
from audiotok.errors import AudioError

DATA = Path(__file__).parent / "data"


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def music(rate: int = 44100, seconds: float = 1.0) -> np.ndarray:
    """A stereo test signal [2, T]: two tones per channel and a little noise, peak below 0.9."""
    rng = np.random.default_rng(0)
    left = sine(440, rate, seconds, 0.4) + sine(1250, rate, seconds, 0.2)
    right = sine(660, rate, seconds, 0.4) + sine(3100, rate, seconds, 0.2)
    noise = rng.uniform(-0.05, 0.05, (2, left.size)).astype(np.float32)
    return np.stack([left, right]) + noise


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spectrum.argmax()])


def quantised(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768), -32768, 32767) / 32768


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 3000) -> float:
    """Highest normalised correlation of two [T] signals over lags within +-max_lag."""
    n = min(a.size, b.size) - max_lag
    ref = a[max_lag:n]
    best = -1.0
    for lag in range(-max_lag, max_lag + 1, 1):
        seg = b[max_lag + lag : n + lag]
        best = max(best, float(np.dot(ref, seg) / np.linalg.norm(ref) / np.linalg.norm(seg)))
    return best


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_round_trip_is_exact_to_16_bits(tmp_path: Path, fmt: str) -> None:
    x = music(44100)
    path = write_audio(tmp_path / f"a.{fmt}", x, 44100, strategy="none")
    y, rate = read_audio(path)
    assert rate == 44100
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, quantised(x).astype(np.float32))
    assert np.abs(y - x).max() <= 0.5 / 32768 + 1e-7
    assert sf.info(path).subtype == "PCM_16"


def test_full_scale_survives_16_bit_round_trip(tmp_path: Path) -> None:
    x = np.array([[1.0, -1.0, 0.5, -0.5, 0.0]], dtype=np.float32)
    y, _ = read_audio(write_audio(tmp_path / "a.wav", x, 8000, strategy="none"))
    np.testing.assert_array_equal(y, [[32767 / 32768, -1.0, 0.5, -0.5, 0.0]])


@pytest.mark.parametrize(("fmt", "rate"), [("ogg", 44100), ("mp3", 44100), ("opus", 48000)])
def test_lossy_round_trip_keeps_length_and_waveform(tmp_path: Path, fmt: str, rate: int) -> None:
    if fmt == "opus" and "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Opus")
    x = music(rate, seconds=2.0)
    path = write_audio(tmp_path / f"a.{fmt}", x, rate, strategy="none")
    y, got_rate = read_audio(path)
    assert got_rate == rate
    assert y.shape[0] == 2
    assert abs(y.shape[1] - x.shape[1]) <= 2 * 1152
    for channel in range(2):
        assert best_correlation(x[channel], y[channel]) > 0.98


@pytest.mark.parametrize(("fmt", "rate"), [("ogg", 384000), ("flac", 705600)])
def test_rates_above_a_formats_ceiling_are_written_at_48k(tmp_path: Path, fmt: str, rate: int):
    # libvorbis segfaults the process from 220 kHz; FLAC's header stops at 655350 Hz.
    x = music(rate, seconds=0.1)
    y, got_rate = read_audio(write_audio(tmp_path / f"a.{fmt}", x, rate, strategy="none"))
    assert got_rate == 48000
    assert abs(y.shape[1] - 4800) <= 2 * 1152


def test_read_start_and_duration(tmp_path: Path) -> None:
    x = np.arange(16000, dtype=np.float32)[None] / 32768
    path = write_audio(tmp_path / "ramp.wav", x, 8000, strategy="none")
    y, _ = read_audio(path, start=0.5, duration=0.25)
    np.testing.assert_array_equal(y, x[:, 4000:6000])
    with pytest.raises(AudioError, match="past the end"):
        read_audio(path, start=2.5)


def test_reads_the_fixtures() -> None:
    speech, rate = read_audio(DATA / "speech_24k.flac")
    assert rate == 24000 and speech.shape[0] == 1 and 2.4 < speech.shape[1] / rate < 2.8
    music_, rate = read_audio(DATA / "music_48k_stereo.flac")
    assert rate == 48000 and music_.shape == (2, 120000)
    assert np.sqrt(np.mean(music_**2)) > 0.1
    assert np.corrcoef(music_)[0, 1] < 0.95  # really stereo
    assert (DATA / "speech_24k.flac").stat().st_size + (
        DATA / "music_48k_stereo.flac"
    ).stat().st_size < 400_000


def assert_one_line_error(excinfo: pytest.ExceptionInfo[AudioError], *words: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as excinfo:
        read_audio(path)
    assert_one_line_error(excinfo, str(path), "no such file")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as excinfo:
        read_audio(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "directory")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(AudioError) as excinfo:
        read_audio(path)
    assert_one_line_error(excinfo, str(path), "cannot read audio")
    assert isinstance(excinfo.value, ValueError)


def test_empty_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as excinfo:
        read_audio(path)
    assert_one_line_error(excinfo, str(path), "contains no audio samples")


def test_nan_samples(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    x = np.zeros((100, 2), np.float32)
    x[50, 1] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as excinfo:
        read_audio(path)
    assert_one_line_error(excinfo, str(path), "NaN")


@pytest.mark.parametrize(
    "wav",
    [
        np.zeros(10, np.float32),
        np.zeros((1, 1, 1, 10), np.float32),
        np.zeros((1, 0), np.float32),
        np.ones((1, 10), np.int16),
        np.array([[0.0, np.inf]]),
        torch.tensor([[0.0, float("nan")]]),
    ],
)
def test_check_audio_rejects(wav: object) -> None:
    with pytest.raises(AudioError, match=r"^clip\.wav: "):
        check_audio(wav, "clip.wav")


# --- conversion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("from_rate", [8000, 96000])
def test_resampling_to_24k_keeps_length_ratio_and_frequency(from_rate: int) -> None:
    x = sine(1000, from_rate, 1.5)[None]
    y = convert_audio(x, from_rate, 24000, 1)
    assert y.dtype == np.float32
    assert y.shape == (1, round(x.shape[1] * 24000 / from_rate))
    assert peak_frequency(y[0], 24000) == pytest.approx(1000, abs=1)
    # a pure tone stays a pure tone at the same level
    middle = y[0, 3000:-3000]
    assert np.sqrt(2 * np.mean(middle**2)) == pytest.approx(0.5, rel=1e-3)


def test_downsampling_removes_what_the_new_rate_cannot_carry() -> None:
    x = sine(15000, 96000, 1.0)[None]  # above 12 kHz, the Nyquist frequency of 24 kHz
    y = convert_audio(x, 96000, 24000, 1)
    assert np.abs(y[:, 1000:-1000]).max() < 1e-4


def test_three_channels_to_mono_is_the_average() -> None:
    x = np.stack([sine(f, 24000, 0.1) for f in (100, 200, 300)])
    y = convert_audio(x, 24000, 24000, 1)
    np.testing.assert_allclose(y, x.mean(0, keepdims=True), atol=1e-7)


def test_three_channels_to_stereo_keeps_the_first_two() -> None:
    x = np.stack([sine(f, 24000, 0.1) for f in (100, 200, 300)])
    np.testing.assert_array_equal(convert_audio(x, 24000, 24000, 2), x[:2])


def test_mono_to_stereo_duplicates() -> None:
    x = sine(100, 24000, 0.1)[None]
    np.testing.assert_array_equal(convert_audio(x, 24000, 24000, 2), np.concatenate([x, x]))


@pytest.mark.parametrize(("channels", "to_channels"), [(2, 3), (6, 4), (2, 0), (1, 3)])
def test_unsupported_channel_conversions(channels: int, to_channels: int) -> None:
    x = np.zeros((channels, 100), np.float32)
    with pytest.raises(AudioError, match=f"{channels}-channel audio to {to_channels}"):
        convert_audio(x, 24000, 24000, to_channels)


def test_convert_is_a_no_op_when_nothing_changes() -> None:
    x = np.zeros((2, 100), np.float64)
    assert convert_audio(x, 24000, 24000, 2) is x
    t = torch.zeros(1, 2, 100)
    assert convert_audio(t, 24000, 24000, 2) is t


def test_convert_rejects_bad_audio() -> None:
    with pytest.raises(AudioError, match="no audio samples"):
        convert_audio(np.zeros((1, 0), np.float32), 8000, 24000, 1)
    with pytest.raises(AudioError, match="NaN"):
        convert_audio(np.full((1, 10), np.nan, np.float32), 24000, 24000, 1)


def test_convert_batches_item_by_item() -> None:
    x = np.stack([music(48000, 0.5), music(48000, 0.5)[::-1]])  # [B=2, C=2, T]
    y = convert_audio(x, 48000, 24000, 1)
    assert y.shape == (2, 1, 12000)
    for item in range(2):
        np.testing.assert_allclose(y[item], convert_audio(x[item], 48000, 24000, 1), atol=1e-6)


def test_torch_in_torch_out() -> None:
    x = torch.from_numpy(music(48000, 0.5)).double()[None]  # [1, 2, T] float64
    y = convert_audio(x, 48000, 24000, 1)
    assert isinstance(y, torch.Tensor)
    assert y.dtype == torch.float64 and y.device == x.device and y.shape == (1, 1, 12000)
    expected = convert_audio(x.numpy(), 48000, 24000, 1)
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-6)
    z = normalize_audio(x[0], 48000, "peak")
    assert isinstance(z, torch.Tensor) and z.dtype == torch.float64
    assert float(z.abs().max()) == pytest.approx(10 ** (-1 / 20), rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    channels=st.integers(1, 6),
    length=st.integers(1, 300),
    to_channels=st.integers(1, 2),
)
def test_channel_conversion_shapes(channels: int, length: int, to_channels: int) -> None:
    x = np.random.default_rng(length).uniform(-1, 1, (channels, length)).astype(np.float32)
    y = convert_audio(x, 16000, 16000, to_channels)
    assert y.shape == (to_channels, length)
    if to_channels == 1:
        np.testing.assert_allclose(y[0], x.mean(0), atol=1e-6)
    else:
        np.testing.assert_array_equal(y, x[:2] if channels > 1 else np.repeat(x, 2, 0))


def test_importing_audio_does_not_import_torch() -> None:
    code = "import sys, audiotok.audio, audiotok.audio.loudness; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# --- loudness ------------------------------------------------------------------------------------


def test_k_weighting_matches_the_biquad_recurrence() -> None:
    rate = 16000
    x = np.random.default_rng(2).standard_normal(3000)
    y = x
    for b, a in k_weighting_biquads(rate):
        b, a = b / a[0], a / a[0]
        out = np.zeros_like(y)
        for n in range(y.size):  # the direct form I recurrence, as a reference
            out[n] = b[0] * y[n] - a[1] * out[n - 1] * (n >= 1) - a[2] * out[n - 2] * (n >= 2)
            out[n] += b[1] * y[n - 1] * (n >= 1) + b[2] * y[n - 2] * (n >= 2)
        y = out
    np.testing.assert_allclose(k_weight(x, rate), y, atol=1e-9)


@pytest.mark.parametrize("rate", [24000, 44100, 48000])
@pytest.mark.parametrize("amplitude", [1.0, 0.1])
def test_loudness_of_a_997_hz_sine(rate: int, amplitude: float) -> None:
    # BS.1770: a 997 Hz sine of peak amplitude A reads 20 log10(A) - 3.01 LUFS (its RMS in dB).
    x = sine(997, rate, 5.0, amplitude)[None]
    assert integrated_loudness(x, rate) == pytest.approx(20 * math.log10(amplitude) - 3.01, abs=0.1)
    # the same tone on both channels adds their powers: +3.01 dB
    stereo = np.concatenate([x, x])
    assert integrated_loudness(stereo, rate) == pytest.approx(
        integrated_loudness(x, rate) + 10 * math.log10(2), abs=1e-6
    )


def test_loudness_gating() -> None:
    rate = 24000
    tone = sine(997, rate, 4.0, 0.5)  # 37 blocks of 400 ms every 100 ms
    reference = integrated_loudness(tone[None], rate)

    # After the tone, 3 blocks straddle the boundary, with 3/4, 2/4 and 1/4 of their samples
    # from the tone, then come blocks with none.
    def expected(rest_power: float) -> float:
        straddling = sum((4 - j) / 4 + j / 4 * rest_power for j in (1, 2, 3))
        return reference + 10 * math.log10((37 + straddling) / 40)

    # silence is below the absolute gate, a tone 30 dB down below the relative gate
    with_silence = np.concatenate([tone, np.zeros(4 * rate, np.float32)])[None]
    assert integrated_loudness(with_silence, rate) == pytest.approx(expected(0.0), abs=0.01)
    quiet = sine(997, rate, 4.0, 0.5 * 10 ** (-30 / 20))
    with_quiet = np.concatenate([tone, quiet])[None]
    assert integrated_loudness(with_quiet, rate) == pytest.approx(expected(1e-3), abs=0.01)
    # a tone 5 dB down passes both gates and lowers the mean
    close = sine(997, rate, 4.0, 0.5 * 10 ** (-5 / 20))
    with_close = np.concatenate([tone, close])[None]
    power = 10 ** (-5 / 10)
    mean = (37 + sum((4 - j) / 4 + j / 4 * power for j in (1, 2, 3)) + 37 * power) / 77
    assert integrated_loudness(with_close, rate) == pytest.approx(
        reference + 10 * math.log10(mean), abs=0.01
    )
    assert integrated_loudness(np.zeros((1, rate)), rate) == -math.inf
    # the absolute gate alone: a tone at -75 LUFS has no block above -70, one at -65 has all
    below = sine(997, rate, 2.0, 10 ** ((-75 + 3.01) / 20))[None]
    above = sine(997, rate, 2.0, 10 ** ((-65 + 3.01) / 20))[None]
    assert integrated_loudness(below, rate) == -math.inf
    assert integrated_loudness(above, rate) == pytest.approx(-65, abs=0.1)


def test_k_weighting_follows_the_published_48k_filter() -> None:
    # BS.1770-4's own coefficients at 48 kHz (shelf, then high pass), a reference independent of
    # the design for any rate that audiotok (like torchaudio and pyloudnorm) uses.
    shelf = (
        [1.53512485958697, -2.69169618940638, 1.19839281085285],
        [1, -1.69065929318241, 0.73248077421585],
    )
    high_pass = ([1.0, -2.0, 1.0], [1, -1.99004745483398, 0.99007225036621])

    def gain_db(freq: float) -> float:
        z = np.exp(-2j * np.pi * freq / 48000)
        response = [np.polyval(b[::-1], z) / np.polyval(a[::-1], z) for b, a in (shelf, high_pass)]
        return float(20 * np.log10(abs(response[0] * response[1])))

    rate = 48000
    at_997 = integrated_loudness(sine(997, rate, 3.0)[None], rate)
    for freq in (30, 100, 3000, 10000):
        got = integrated_loudness(sine(freq, rate, 3.0)[None], rate) - at_997
        assert got == pytest.approx(gain_db(freq) - gain_db(997), abs=0.1)


# --- normalisation and writing -------------------------------------------------------------------


def test_strategy_clip(tmp_path: Path) -> None:
    x = np.array([[-2.0, -0.5, 0.0, 0.25, 1.5]], np.float32)
    np.testing.assert_array_equal(normalize_audio(x, 8000, "clip"), [[-1.0, -0.5, 0.0, 0.25, 1.0]])
    y, _ = read_audio(write_audio(tmp_path / "a.wav", x, 8000, strategy="clip"))
    np.testing.assert_array_equal(y, [[-1.0, -0.5, 0.0, 0.25, 32767 / 32768]])


@pytest.mark.parametrize("level", [0.05, 3.0])
def test_strategy_peak(tmp_path: Path, level: float) -> None:
    x = music(24000) * level
    y, _ = read_audio(write_audio(tmp_path / "a.flac", x, 24000, strategy="peak"))
    assert 20 * np.log10(np.abs(y).max()) == pytest.approx(-1.0, abs=1e-3)
    np.testing.assert_allclose(y / np.abs(y).max(), x / np.abs(x).max(), atol=1e-4)


def test_strategy_rms(tmp_path: Path) -> None:
    x = music(24000) * 0.01
    y, _ = read_audio(write_audio(tmp_path / "a.wav", x, 24000, strategy="rms"))
    rms_db = 10 * np.log10(np.mean(y.mean(0).astype(np.float64) ** 2))
    assert rms_db == pytest.approx(-18.0, abs=0.01)


def test_strategy_rms_clips_what_goes_beyond(tmp_path: Path) -> None:
    x = np.zeros((1, 24000), np.float32)
    x[0, ::100] = 1.0  # spiky: the peaks end far above 1 at -18 dB RMS
    y = normalize_audio(x, 24000, "rms")
    assert np.abs(y).max() == 1.0


def test_strategy_loudness(tmp_path: Path) -> None:
    x = music(48000, 3.0) * 0.05
    path = write_audio(tmp_path / "a.flac", x, 48000, strategy="loudness")
    y, rate = read_audio(path)
    assert integrated_loudness(y, rate) == pytest.approx(-14.0, abs=0.05)
    quieter = normalize_audio(x, 48000, "loudness", loudness_headroom_db=23)
    assert integrated_loudness(quieter, 48000) == pytest.approx(-23.0, abs=0.05)


def test_strategy_loudness_leaves_near_silence_alone() -> None:
    x = music(48000) * 1e-3  # RMS below audiocraft's energy floor of 2e-3
    np.testing.assert_array_equal(normalize_audio(x, 48000, "loudness"), x)


def test_strategy_none() -> None:
    x = music(8000) * 0.3
    np.testing.assert_array_equal(normalize_audio(x, 8000, "none"), x)
    with pytest.raises(AudioError, match="exceed"):
        normalize_audio(x * 10, 8000, "none")


def test_normalize_false_only_scales_down() -> None:
    quiet = music(8000) * 0.1
    np.testing.assert_array_equal(normalize_audio(quiet, 8000, "peak", normalize=False), quiet)
    loud = normalize_audio(quiet * 20, 8000, "peak", normalize=False)
    assert np.abs(loud).max() == pytest.approx(10 ** (-1 / 20), rel=1e-6)


def test_silence_is_not_scaled() -> None:
    x = np.zeros((2, 1000), np.float32)
    for strategy in ("peak", "rms", "loudness"):
        np.testing.assert_array_equal(normalize_audio(x, 8000, strategy), x)


def test_unknown_strategy_and_format(tmp_path: Path) -> None:
    x = music(8000)
    with pytest.raises(AudioError, match="unknown strategy 'loud'"):
        write_audio(tmp_path / "a.wav", x, 8000, strategy="loud")
    with pytest.raises(AudioError, match="unknown audio format 'xyz'"):
        write_audio(tmp_path / "a.xyz", x, 8000)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    assert write_audio(path, music(8000), 8000) == path
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary file left
    before = path.read_bytes()
    with pytest.raises(AudioError) as excinfo:
        write_audio(path, music(8000) * 0.5, 8000, strategy="none")
    assert_one_line_error(excinfo, str(path), "exists", "pass overwrite=True")
    assert "--force" not in str(excinfo.value), "the Python API names its own argument"
    assert path.read_bytes() == before
    write_audio(path, music(8000) * 0.5, 8000, strategy="none", overwrite=True)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    x = np.zeros((3, 8000), np.float32)  # mp3 has at most two channels
    with pytest.raises(AudioError, match="cannot write mp3 audio"):
        write_audio(tmp_path / "a.mp3", x, 8000)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(AudioError, match="does not exist"):
        write_audio(tmp_path / "missing" / "a.wav", x, 8000)


def test_written_file_has_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = write_audio(tmp_path / "a.wav", music(8000), 8000)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_accepts_torch(tmp_path: Path) -> None:
    x = torch.from_numpy(music(16000))
    y, _ = read_audio(write_audio(tmp_path / "a.wav", x, 16000, strategy="none"))
    np.testing.assert_array_equal(y, quantised(x.numpy()))


def test_mp3_bitrate(tmp_path: Path) -> None:
    x = music(44100, 4.0)
    for kbps in (64, 128, 320):
        path = write_audio(tmp_path / f"{kbps}.mp3", x, 44100, bitrate_kbps=kbps)
        assert path.stat().st_size * 8 / 4.0 / 1000 == pytest.approx(kbps, rel=0.1)


@pytest.mark.parametrize(("fmt", "rate"), [("opus", 44100), ("mp3", 96000)])
def test_lossy_at_an_unsupported_rate_is_written_at_48k(
    tmp_path: Path, fmt: str, rate: int
) -> None:
    if fmt == "opus" and "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Opus")
    path = write_audio(tmp_path / f"a.{fmt}", music(rate, 1.0), rate)
    y, got_rate = read_audio(path)
    assert got_rate == 48000 and abs(y.shape[1] - 48000) < 2000


# --- audiocraft's audio_write -------------------------------------------------------------------


def test_audio_write_like_audiocraft(tmp_path: Path) -> None:
    x = torch.from_numpy(music(24000))
    path = audio_write(tmp_path / "sub" / "song.v1", x, 24000)
    assert path == tmp_path / "sub" / "song.v1.wav"  # suffix appended to the text
    y, _ = read_audio(path)
    assert 20 * np.log10(np.abs(y).max()) == pytest.approx(-1.0, abs=1e-3)
    # overwrites, and takes [T]
    again = audio_write(tmp_path / "sub" / "song.v1", x[0] * 0.1, 24000, strategy="none")
    assert again == path and read_audio(path)[0].shape == (1, x.shape[1])
    raw = audio_write(tmp_path / "raw", x, 24000, format="flac", add_suffix=False)
    assert raw == tmp_path / "raw" and sf.info(raw).format == "FLAC"


def test_audio_write_clip_clamps_to_the_peak_headroom(tmp_path: Path) -> None:
    x = np.array([[-2.0, 0.5, 2.0]], np.float32)
    y, _ = read_audio(audio_write(tmp_path / "a", x, 8000, strategy="clip"))
    limit = quantised(np.float32(10 ** (-1 / 20)))
    np.testing.assert_allclose(y, [[-limit, 0.5, limit]], atol=1 / 32768)


def test_audio_write_normalize_false(tmp_path: Path) -> None:
    x = music(8000) * 0.1
    y, _ = read_audio(audio_write(tmp_path / "a", x, 8000, normalize=False))
    np.testing.assert_array_equal(y, quantised(x))


def test_audio_write_mp3_rate(tmp_path: Path) -> None:
    x = music(44100, 4.0)
    small = audio_write(tmp_path / "small", x, 44100, format="mp3", mp3_rate=96)
    big = audio_write(tmp_path / "big", x, 44100, format="mp3")  # 320 kbps
    assert big.stat().st_size / small.stat().st_size == pytest.approx(320 / 96, rel=0.1)


@settings(max_examples=25, deadline=None)
@given(
    rate=st.sampled_from([8000, 11025, 24000, 44100, 48000]),
    channels=st.integers(1, 5),
    seconds=st.floats(0.05, 2.5),
    chunk=st.integers(1, 30_000),  # 1: a sample at a time
)
def test_loudness_meter_in_blocks_equals_whole(rate, channels, seconds, chunk) -> None:
    """Any block size gives the whole-signal figure: the K-weighting's tail is carried, and
    gating blocks that straddle two pieces are summed from the running sum."""
    from audiotok.audio.loudness import LoudnessMeter

    rng = np.random.default_rng(chunk)
    n = max(1, int(seconds * rate))
    x = rng.standard_normal((channels, n)) * np.linspace(1e-3, 0.3, n)
    meter = LoudnessMeter(rate, channels)
    for i in range(0, n, chunk):
        meter.add(x[:, i : i + chunk])
    assert meter.loudness() == pytest.approx(integrated_loudness(x, rate), abs=1e-9)
