"""Reading, checking and converting audio (writing is in :mod:`audiotok.audio.write`).

Audio is a float array of shape ``[C, T]`` (or ``[B, C, T]`` for batches) with samples nominally
in [-1, 1]. Functions accept numpy arrays or torch tensors and give back the same kind; torch is
never imported at module level, so that importing audiotok (e.g. for ``audiotok --help``) stays
cheap. Every problem with the audio itself raises :class:`~audiotok.errors.AudioError`.

Channel policy of :func:`convert_audio` (audiocraft's ``convert_audio_channels`` restricted to
the cases with an unambiguous answer):

* same number of channels: unchanged;
* to mono: the average of all channels;
* mono to stereo: the channel is duplicated;
* more than two channels to stereo: the first two are kept, which in WAV channel order
  (WAVEFORMATEXTENSIBLE) are front left and front right;
* anything else (e.g. stereo to 3 channels, 6 to 4): :class:`AudioError`.

Resampling uses libsoxr at quality ``"HQ"`` (:data:`SOXR_QUALITY`): linear phase, 20-bit
precision, flat to about 91 % of the lower Nyquist frequency and more than 120 dB down at it;
that is transparent for 16-bit audio at less cost than ``"VHQ"``. Each signal is resampled whole
(not streamed), so the output has ``round(T * to_rate / from_rate)`` samples and no delay.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioError

SOXR_QUALITY = "HQ"
MIN_SAMPLE_RATE = 1000
"""The lowest sample rate read from a file, in Hz. No audio format or device goes below a few
kHz (telephony's 8 kHz is the lowest in use), so a lower rate is a damaged or hostile header:
a 4 KB WAV declared at 1 Hz stood for 33 minutes, and soxr, upsampling it 24 000 times,
buffered gigabytes. Codec configs take the same minimum (``CodecConfig``)."""


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch."""
    # If torch was never imported, x cannot be a tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_float(x: Any) -> bool:
    """Whether ``x`` (a tensor or an array) holds floating-point values."""
    if is_tensor(x):
        return bool(x.is_floating_point())
    return bool(np.issubdtype(x.dtype, np.floating))


def all_finite(x: Any) -> bool:
    """Whether every value of ``x`` (a tensor or an array) is finite: no NaN, no inf."""
    return bool(x.isfinite().all()) if is_tensor(x) else bool(np.isfinite(x).all())


def to_numpy(wav: Any) -> np.ndarray:
    """``wav`` as a numpy array (a CPU copy of a tensor; float32 for half precision, integers
    kept as they are, so that int16 samples are still refused as not float)."""
    if is_tensor(wav):
        wav = wav.detach()
        # numpy has no bfloat16.
        half = wav.is_floating_point() and wav.dtype.itemsize < 4
        return (wav.float() if half else wav).cpu().numpy()
    return np.asarray(wav)


def same_kind_as(out: np.ndarray, ref: Any) -> Any:
    """``out`` as a tensor of ``ref``'s dtype and device if ``ref`` is a tensor, else as is."""
    if is_tensor(ref):
        import torch

        return torch.from_numpy(np.ascontiguousarray(out)).to(device=ref.device, dtype=ref.dtype)
    return out


def one_line(err: BaseException) -> str:
    """An exception's message on one line, for wrapping library errors."""
    text = getattr(err, "error_string", None) or str(err) or type(err).__name__
    return " ".join(text.split())


def check_audio(wav: Any, what: str = "audio") -> None:
    """Checks that ``wav`` is usable audio: float, ``[C, T]`` or ``[B, C, T]``, non-empty, finite.

    Args:
        wav: Audio ``[C, T]`` or ``[B, C, T]``, a numpy array or a torch tensor.
        what: What to call the audio in error messages, e.g. the file it came from.

    Raises:
        AudioError: If any of the conditions fails.
    """
    shape = tuple(getattr(wav, "shape", ()))
    if len(shape) not in (2, 3):
        raise AudioError(f"{what}: expected audio of shape [C, T] or [B, C, T], got {list(shape)}")
    if not is_float(wav):
        raise AudioError(f"{what}: expected float samples, got {wav.dtype}")
    if 0 in shape:
        raise AudioError(f"{what}: contains no audio samples (shape {list(shape)})")
    if not all_finite(wav):
        raise AudioError(f"{what}: contains NaN or infinite samples")


def read_audio(
    path: str | os.PathLike[str] | BinaryIO, *, start: float = 0.0, duration: float | None = None
) -> tuple[np.ndarray, int]:
    """Reads any file libsndfile can decode (wav, flac, ogg/vorbis, opus, mp3, aiff, ...).

    Args:
        path: The audio file, or a binary file object (e.g. standard input's bytes).
        start: Where to start reading, in seconds.
        duration: How many seconds to read at most; None reads to the end.

    Returns:
        The samples as float32 ``[C, T]`` in [-1, 1], and the sample rate in Hz.

    Raises:
        AudioError: If the file is missing, a directory, not decodable audio, declares a rate
            below :data:`MIN_SAMPLE_RATE`, or gives no or non-finite samples.
    """
    if hasattr(path, "read"):
        p: Any = path
        name = getattr(path, "name", None) or "<stream>"
    else:
        p = name = Path(path)
        if not p.exists():
            raise AudioError(f"{p}: no such file")
        if p.is_dir():
            raise AudioError(f"{p}: is a directory, not an audio file")
    if start < 0 or (duration is not None and duration <= 0):
        raise AudioError(f"{name}: start must be >= 0 and duration > 0 (got {start}, {duration})")
    try:
        with sf.SoundFile(p) as f:
            rate = check_rate(f.samplerate, name)
            first = round(start * rate)
            if first >= f.frames > 0:
                raise AudioError(
                    f"{name}: start {start} s is past the end ({f.frames / rate:.3f} s)"
                )
            if first:
                f.seek(first)
            frames = -1 if duration is None else max(1, round(duration * rate))
            data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(f"{name}: cannot read audio: {one_line(err)}") from err
    wav = np.ascontiguousarray(data.T)
    check_audio(wav, str(name))
    return wav, rate


def check_rate(rate: int, what: Any) -> int:
    """``rate``, or AudioError when it is below :data:`MIN_SAMPLE_RATE`."""
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{what}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz, the lowest audiotok "
            "reads or resamples"
        )
    return rate


def can_convert_channels(channels: int, to_channels: int) -> bool:
    """Whether the channel policy converts ``channels`` channels to ``to_channels``."""
    return to_channels == channels or to_channels == 1 or (to_channels == 2 and channels != 2)


def _check_channels(channels: int, to_channels: int) -> None:
    if not can_convert_channels(channels, to_channels):
        raise AudioError(
            f"cannot convert {channels}-channel audio to {to_channels} channels "
            "(only to mono, or to stereo from mono or from more than 2 channels)"
        )


def convert_channels(x: np.ndarray, to_channels: int) -> np.ndarray:
    """``x`` ``[..., C, T]`` with ``to_channels`` channels, by the module's channel policy."""
    _check_channels(x.shape[-2], to_channels)
    channels = x.shape[-2]
    if channels == to_channels:
        return x
    if to_channels == 1:
        return x.mean(axis=-2, keepdims=True, dtype=np.float64).astype(x.dtype)
    if channels == 1:
        return np.repeat(x, 2, axis=-2)
    return x[..., :2, :]


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resamples ``x`` ``[..., C, T]`` (float32 numpy) with soxr, one signal at a time."""
    *lead, channels, length = x.shape
    # soxr wants [T, C] frames; each batch item is a separate signal.
    items = [
        soxr.resample(np.ascontiguousarray(item.T), from_rate, to_rate, quality=SOXR_QUALITY).T
        for item in x.reshape(-1, channels, length)
    ]
    out = np.stack(items).reshape(*lead, channels, -1)
    if out.shape[-1] == 0:
        raise AudioError(f"{length} samples are too few to resample {from_rate} Hz to {to_rate} Hz")
    return out


def convert_audio(wav: Any, from_rate: int, to_rate: int, to_channels: int) -> Any:
    """Resamples audio and converts its number of channels (see the module's channel policy).

    Args:
        wav: Audio ``[C, T]`` or ``[B, C, T]``, numpy or torch.
        from_rate: Its sample rate in Hz.
        to_rate: The wanted sample rate in Hz.
        to_channels: The wanted number of channels.

    Returns:
        ``wav`` itself if nothing needs doing; otherwise ``[C', T']`` or ``[B, C', T']`` with
        ``T' = round(T * to_rate / from_rate)``: float32 numpy for numpy input, a tensor of the
        input's dtype and device for torch input.

    Raises:
        AudioError: If the audio is empty or not finite, the conversion is not supported, or
            it resamples from or to a rate below :data:`MIN_SAMPLE_RATE`.
    """
    check_audio(wav)
    if from_rate <= 0 or to_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    if from_rate != to_rate:  # soxr buffers gigabytes at ratios of thousands
        check_rate(min(from_rate, to_rate), "audio")
    channels = wav.shape[-2]
    _check_channels(channels, to_channels)
    if from_rate == to_rate and channels == to_channels:
        return wav
    x = to_numpy(wav).astype(np.float32, copy=False)
    # Downmix before and upmix after resampling: both commute with it, and this way soxr
    # processes as few channels as possible.
    if to_channels < channels:
        x = convert_channels(x, to_channels)
    if from_rate != to_rate:
        x = resample(x, int(from_rate), int(to_rate))
    return same_kind_as(convert_channels(x, to_channels), wav)
