"""Normalising and writing audio: strategies to bring it into [-1, 1], atomic writes, and
audiocraft's ``audio_write``.

Formats: ``wav`` and ``flac`` (16-bit PCM), ``ogg`` (Vorbis), ``mp3`` (constant bitrate) and
``opus`` (Ogg Opus), all through libsndfile. A file is written to a temporary name beside its
target and moved into place, so no reader ever sees it half written, and an existing file is
replaced only when asked.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..errors import AudioError
from ..runtime.files import atomic_path, check_target
from .loudness import LoudnessMeter
from .read import check_audio, is_tensor, one_line, resample, same_kind_as, to_numpy

logger = logging.getLogger(__name__)

STRATEGIES = ("clip", "peak", "rms", "loudness", "none")

_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# format name -> (libsndfile container, default subtype, sample rates the codec takes or None)
FORMATS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "wav": ("WAV", "PCM_16", None),
    "flac": ("FLAC", "PCM_16", None),
    "ogg": ("OGG", "VORBIS", None),
    "mp3": ("MP3", "MPEG_LAYER_III", _MP3_RATES),
    "opus": ("OGG", "OPUS", (8000, 12000, 16000, 24000, 48000)),
}
# The highest rate each format is written at: libvorbis crashes the process (a segfault in
# libsndfile, measured from 220 kHz; 200 kHz works) and FLAC's header holds at most 655350 Hz.
_MAX_RATES = {"ogg": 200_000, "flac": 655_350}
# Nominal Vorbis bitrates (kbps, stereo 44.1 kHz) of quality levels 0..10, to map a bitrate onto
# libsndfile's only Vorbis knob, the VBR quality.
_VORBIS_KBPS = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)


def _clip(x: np.ndarray, log_clipping: bool, what: str) -> np.ndarray:
    peak = float(np.abs(x).max())
    if log_clipping and peak > 1:
        share = 100 * float((np.abs(x) > 1).mean())
        logger.warning("%s: clipping %.4f%% of the samples (peak %.3f)", what, share, peak)
    return np.clip(x, -1.0, 1.0)


@dataclass
class Normalization:
    """One of the :data:`STRATEGIES` with its settings: how audio is brought into [-1, 1].

    Strategies that depend on the whole signal's level (``peak``, ``rms``, ``loudness``) take
    a gain from a :class:`LevelMeter` fed the whole signal first, so a long signal can be
    measured block by block, then scaled block by block (see :func:`normalize_audio` for what
    each strategy does).
    """

    strategy: str = "peak"
    normalize: bool = True
    peak_clip_headroom_db: float = 1.0
    rms_headroom_db: float = 18.0
    loudness_headroom_db: float = 14.0
    loudness_compressor: bool = False
    log_clipping: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise AudioError(f"unknown strategy {self.strategy!r}; use one of {STRATEGIES}")

    @property
    def needs_level(self) -> bool:
        """Whether the gain depends on the whole signal (so it must be measured first)."""
        return self.strategy in ("peak", "rms", "loudness")

    def meter(self, sample_rate: int, channels: int) -> LevelMeter:
        return LevelMeter(sample_rate, channels, self.strategy == "loudness")

    def gain(self, meter: LevelMeter) -> float | None:
        """The gain the strategy applies to the signal ``meter`` measured (None: audio too
        quiet for ``loudness``, left as it is, not even compressed)."""
        if self.strategy in ("peak", "rms"):
            if self.strategy == "peak":
                level, headroom = meter.peak, self.peak_clip_headroom_db
            else:
                level, headroom = meter.mono_rms, self.rms_headroom_db
            gain = 10 ** (-headroom / 20) / level if level > 0 else 1.0
            return gain if self.normalize or gain < 1 else 1.0
        if self.strategy == "loudness":
            if meter.rms < 2e-3:
                return None
            loudness = meter.loudness()
            return (
                10 ** ((-self.loudness_headroom_db - loudness) / 20)
                if math.isfinite(loudness)
                else 1.0
            )
        return 1.0

    def apply(self, x: np.ndarray, gain: float | None, what: str = "audio") -> np.ndarray:
        """Scales a block ``[C, n]`` (float32) by ``gain`` and brings it into [-1, 1]."""
        if self.strategy == "none":
            if x.size and np.abs(x).max() > 1:
                raise AudioError(
                    f"{what}: samples exceed [-1, 1] and strategy 'none' does not rescale"
                )
            return x
        if gain is not None and gain != 1.0:
            x = x * np.float32(gain)
        if self.strategy == "loudness" and self.loudness_compressor and gain is not None:
            x = np.tanh(x)
        if self.strategy in ("rms", "loudness"):
            return _clip(x, self.log_clipping, what)
        return np.clip(x, -1.0, 1.0) if self.strategy == "clip" else x


class LevelMeter:
    """The level statistics of a signal fed in blocks ``[C, n]``: peak, RMS and loudness."""

    def __init__(self, sample_rate: int, channels: int, loudness: bool = False) -> None:
        self.channels = channels
        self.peak, self.count = 0.0, 0
        self._squares = self._mono_squares = 0.0  # float64 sums
        self._loudness = LoudnessMeter(sample_rate, channels) if loudness else None

    def add(self, x: np.ndarray) -> None:
        if not x.size:
            return
        self.peak = max(self.peak, float(np.abs(x).max()))
        x64 = x.astype(np.float64)
        self._squares += float((x64**2).sum())
        self._mono_squares += float((x64.mean(axis=0) ** 2).sum())
        self.count += x.shape[-1]
        if self._loudness is not None:
            self._loudness.add(x64)

    @property
    def rms(self) -> float:
        """Over all samples of all channels."""
        return math.sqrt(self._squares / max(1, self.count * self.channels))

    @property
    def mono_rms(self) -> float:
        """Of the channels' average."""
        return math.sqrt(self._mono_squares / max(1, self.count))

    def loudness(self) -> float:
        return self._loudness.loudness()


def normalize_audio(
    wav: Any,
    sample_rate: int,
    strategy: str = "peak",
    *,
    normalize: bool = True,
    peak_clip_headroom_db: float = 1.0,
    rms_headroom_db: float = 18.0,
    loudness_headroom_db: float = 14.0,
    loudness_compressor: bool = False,
    log_clipping: bool = False,
    what: str = "audio",
) -> Any:
    """Brings audio into [-1, 1] by one of the :data:`STRATEGIES`, as audiocraft does.

    ``clip`` clamps to [-1, 1] (audiocraft's clamps to the peak headroom: see
    :func:`audio_write`); ``peak`` scales the peak to ``-peak_clip_headroom_db`` dBFS; ``rms``
    scales the RMS of the channels' average to ``-rms_headroom_db`` dBFS, then clips;
    ``loudness`` applies the gain to reach ``-loudness_headroom_db`` LUFS (leaving audio with an
    RMS below 2e-3 as it is), then an optional ``tanh``, then clips; ``none`` changes nothing and
    rejects audio beyond [-1, 1]. With ``normalize=False``, ``peak`` and ``rms`` only scale down.
    Unlike audiocraft's, silence is left as it is (audiocraft's ``peak`` and ``rms`` give NaN
    there), and ``none`` accepts samples of exactly +-1 (audiocraft asserts below 1). (Signals
    in blocks: :class:`Normalization`.)

    Args:
        wav: Audio ``[C, T]``, numpy or torch.
        sample_rate: Its sample rate in Hz.
        strategy: One of :data:`STRATEGIES`.
        normalize: Whether ``peak`` and ``rms`` may scale up too.
        peak_clip_headroom_db: Headroom of ``peak``, in dB.
        rms_headroom_db: Headroom of ``rms``, in dB.
        loudness_headroom_db: Target of ``loudness``, in dB below 0 LUFS.
        loudness_compressor: Whether ``loudness`` soft-clips with ``tanh``.
        log_clipping: Whether to log a warning when ``rms`` or ``loudness`` clips.
        what: What to call the audio in messages.

    Returns:
        ``[C, T]``, the same kind as ``wav`` (numpy output is float32).
    """
    if strategy not in STRATEGIES:
        raise AudioError(f"{what}: unknown strategy {strategy!r}; use one of {STRATEGIES}")
    check_audio(wav, what)
    if wav.ndim != 2:
        raise AudioError(f"{what}: expected audio of shape [C, T], got {list(wav.shape)}")
    x = to_numpy(wav).astype(np.float32)
    norm = Normalization(strategy, normalize, peak_clip_headroom_db, rms_headroom_db,
                         loudness_headroom_db, loudness_compressor, log_clipping)  # fmt: skip
    gain: float | None = 1.0
    if norm.needs_level:
        meter = norm.meter(sample_rate, x.shape[0])
        meter.add(x)
        gain = norm.gain(meter)
    return same_kind_as(norm.apply(x, gain, what), wav)


def pcm16(x: np.ndarray) -> np.ndarray:
    """Float samples as int16, ``round(x * 32768)`` clipped.

    libsndfile scales by 32767 on writing but by 1/32768 on reading; quantising here as ffmpeg
    (hence audiocraft) does makes the round trip exact.
    """
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _compression_level(fmt: str, kbps: float, rate: int, channels: int) -> float:
    """Maps a bitrate onto libsndfile's compression level in [0, 1] (0 = best quality)."""
    if fmt == "mp3":  # libsndfile: CBR kbps = high - level * (high - low), by MPEG version
        high, low = (320, 32) if rate >= 32000 else (160, 8) if rate >= 16000 else (64, 8)
        level = (high - kbps) / (high - low) - 1e-9  # libsndfile truncates the kbps to int
    elif fmt == "opus":  # libsndfile: bps per channel = (1 - level) * 250000 + 6000
        level = 1 - (kbps * 1000 / channels - 6000) / 250000
    else:  # Vorbis: quality = 1 - level; interpolated from the nominal bitrates (approximate)
        level = 1 - float(np.interp(kbps, _VORBIS_KBPS, np.arange(11) / 10))
    return min(max(level, 0.0), 1.0)


def sound_file(path: Path, fmt: str, sample_rate: int, channels: int, subtype: str,
               bitrate_kbps: float | None, target: Path) -> sf.SoundFile:  # fmt: skip
    """``path`` opened for writing ``fmt`` (one of :data:`FORMATS`) as :func:`write_audio`
    writes it: mp3 constant bitrate, 320 kbps by default; a bitrate mapped onto libsndfile's
    compression level. Errors name ``target``, the file the user asked for."""
    container = FORMATS[fmt][0]
    options: dict[str, Any] = {}
    if fmt == "mp3":
        options["bitrate_mode"] = "CONSTANT"
        bitrate_kbps = 320 if bitrate_kbps is None else bitrate_kbps
    if bitrate_kbps is not None and fmt in ("mp3", "ogg", "opus"):
        options["compression_level"] = _compression_level(fmt, bitrate_kbps, sample_rate, channels)
    try:
        return sf.SoundFile(path, "w", sample_rate, channels, subtype, format=container, **options)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(f"{target}: cannot write {fmt} audio: {one_line(err)}") from err


def audio_format(target: Path, format: str | None = None) -> str:
    """The format to write ``target`` in: ``format``, or the path's suffix; AudioError if it is
    not one of :data:`FORMATS`."""
    fmt = (format or target.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise AudioError(f"{target}: unknown audio format {fmt!r}; use one of {tuple(FORMATS)}")
    return fmt


def file_rate(fmt: str, sample_rate: int) -> int:
    """The rate audio at ``sample_rate`` is written at in ``fmt``: its own, or 48 kHz where
    the encoder does not take it (mp3 and Opus take a few rates, Vorbis and FLAC have a
    ceiling)."""
    rates = FORMATS[fmt][2]
    if sample_rate > _MAX_RATES.get(fmt, sample_rate):
        return 48000
    return sample_rate if rates is None or sample_rate in rates else 48000


def write_audio(
    path: str | os.PathLike[str],
    wav: Any,
    sample_rate: int,
    *,
    strategy: str = "peak",
    format: str | None = None,
    overwrite: bool = False,
    normalize: bool = True,
    peak_clip_headroom_db: float = 1.0,
    rms_headroom_db: float = 18.0,
    loudness_headroom_db: float = 14.0,
    loudness_compressor: bool = False,
    log_clipping: bool = False,
    bitrate_kbps: float | None = None,
    subtype: str | None = None,
) -> Path:
    """Normalises audio with :func:`normalize_audio` and writes it atomically.

    The audio goes to a temporary file in the same directory, which is then renamed, so no one
    ever sees ``path`` half written. ``wav`` and ``flac`` are 16-bit PCM with samples quantised
    to ``round(x * 32768)``, which reading gives back exactly; ``ogg`` is Vorbis; ``mp3`` is
    constant bitrate, 320 kbps by default; ``opus`` is Ogg Opus. Audio at a sample rate that
    mp3 or Opus does not take, or above Vorbis's 200 kHz or FLAC's 655350 Hz, is resampled to
    48 kHz.

    Args:
        path: Where to write.
        wav: Audio ``[C, T]``, numpy or torch.
        sample_rate: Its sample rate in Hz.
        strategy: Normalisation, one of :data:`STRATEGIES`.
        format: ``wav``, ``flac``, ``ogg``, ``mp3`` or ``opus``; None takes the path's suffix.
        overwrite: Whether an existing file may be replaced.
        normalize, peak_clip_headroom_db, rms_headroom_db, loudness_headroom_db,
            loudness_compressor, log_clipping: As for :func:`normalize_audio`.
        bitrate_kbps: Bitrate of mp3 or Opus; for ogg mapped (roughly) onto a Vorbis quality.
        subtype: A libsndfile subtype to use instead, e.g. ``PCM_24`` or ``FLOAT``.

    Returns:
        The path written.

    Raises:
        AudioError: On bad audio, an unknown format, an existing file without ``overwrite``, a
            missing directory, or an encoder error.
    """
    target = Path(path)
    fmt = audio_format(target, format)
    container, default_subtype, _ = FORMATS[fmt]
    subtype = (subtype or default_subtype).upper()
    if subtype not in sf.available_subtypes(container):
        raise AudioError(f"{target}: this libsndfile cannot write {subtype} in {container} files")
    check_audio(wav, str(target))
    check_target(target, overwrite, AudioError)
    x = to_numpy(
        normalize_audio(
            wav,
            sample_rate,
            strategy,
            normalize=normalize,
            peak_clip_headroom_db=peak_clip_headroom_db,
            rms_headroom_db=rms_headroom_db,
            loudness_headroom_db=loudness_headroom_db,
            loudness_compressor=loudness_compressor,
            log_clipping=log_clipping,
            what=str(target),
        )
    )
    if file_rate(fmt, sample_rate) != sample_rate:
        x, sample_rate = resample(x, sample_rate, 48000), 48000
    data = (pcm16(x) if subtype == "PCM_16" else x).T
    with atomic_path(target, overwrite, AudioError) as tmp:
        try:
            with sound_file(tmp, fmt, sample_rate, len(x), subtype, bitrate_kbps, target) as f:
                f.write(np.ascontiguousarray(data))
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise AudioError(f"{target}: cannot write {fmt} audio: {one_line(err)}") from err
    return target


def audio_write(
    stem_name: str | os.PathLike[str],
    wav: Any,
    sample_rate: int,
    format: str = "wav",
    mp3_rate: int = 320,
    ogg_rate: int | None = None,
    normalize: bool = True,
    strategy: str = "peak",
    peak_clip_headroom_db: float = 1,
    rms_headroom_db: float = 18,
    loudness_headroom_db: float = 14,
    loudness_compressor: bool = False,
    log_clipping: bool = True,
    make_parent_dir: bool = True,
    add_suffix: bool = True,
) -> Path:
    """A drop-in for audiocraft's ``audiocraft.data.audio.audio_write``, without ffmpeg.

    Same arguments and behaviour: ``wav`` may be ``[T]``; ``.{format}`` is appended to the text
    of ``stem_name`` (``a.b`` gives ``a.b.wav``) when ``add_suffix``; an existing file is
    replaced; ``clip`` clamps to +-10^(-peak_clip_headroom_db / 20), not to [-1, 1]. But errors
    are :class:`AudioError` rather than assertions or ``RuntimeError``, the encoders are
    libsndfile's, ``ogg_rate`` only picks a Vorbis quality of about that bitrate, and ``flac``
    is written in 16 bits (audiocraft leaves the depth to ffmpeg).

    Args:
        stem_name: The path, without the extension if ``add_suffix``.
        wav: Audio ``[C, T]`` or ``[T]``, numpy or torch.
        sample_rate: Its sample rate in Hz.
        format: ``wav``, ``mp3``, ``ogg`` or ``flac`` (or ``opus``).
        mp3_rate: Bitrate of mp3, in kbps.
        ogg_rate: Bitrate of ogg in kbps, or None for the encoder's default quality.
        normalize, strategy, peak_clip_headroom_db, rms_headroom_db, loudness_headroom_db,
            loudness_compressor, log_clipping: As for :func:`normalize_audio`.
        make_parent_dir: Whether to create missing parent directories.
        add_suffix: Whether to append ``.{format}`` to ``stem_name``.

    Returns:
        The path written.
    """
    if getattr(wav, "ndim", None) == 1:
        wav = wav[None]
    path = Path(f"{stem_name}.{format}" if add_suffix else stem_name)
    if strategy == "clip":
        check_audio(wav, str(path))
        limit = 10 ** (-peak_clip_headroom_db / 20)
        wav = wav.clamp(-limit, limit) if is_tensor(wav) else np.clip(wav, -limit, limit)
    if make_parent_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    return write_audio(
        path,
        wav,
        sample_rate,
        strategy=strategy,
        format=format,
        overwrite=True,
        normalize=normalize,
        peak_clip_headroom_db=peak_clip_headroom_db,
        rms_headroom_db=rms_headroom_db,
        loudness_headroom_db=loudness_headroom_db,
        loudness_compressor=loudness_compressor,
        log_clipping=log_clipping,
        bitrate_kbps={"mp3": mp3_rate, "ogg": ogg_rate}.get(format),
    )
