"""Audio files read and written block by block, for signals of any length in bounded memory.

:class:`AudioBlocks` reads a file in blocks, converting channels (the policy of
:func:`audiotok.audio.read.convert_audio`) and resampling with a stateful soxr stream;
:class:`AudioSink` writes blocks, resampling back and normalising, to a temporary file that
becomes the target only once complete. Memory stays that of one block, whatever the file's
length.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioError
from ..runtime.files import atomic_path, not_a_file, temp_stem
from .read import SOXR_QUALITY, check_audio, check_rate, convert_channels, one_line
from .write import FORMATS, Normalization, audio_format, file_rate, pcm16, sound_file

BLOCK_SECONDS = 2.0
"""Source seconds per block. Measured with the 24 kHz EnCodec architecture on 2 cores, 60 s of
audio: 2 s blocks compressed fastest, with a peak RSS of 439 MiB (1 s: 409 MiB, 4 s: 578 MiB,
10 s: 823 MiB; convolution workspaces grow with the block)."""
BLOCK_FRAMES = 1 << 16  # samples per block read back from the level pass's temporary file


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """libsndfile's description of an audio file (rate, channels, frames), or AudioError."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: {not_a_file(p)}")
    try:
        info = sf.info(str(p))
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{p}: cannot read audio: {one_line(err)}") from err
    check_rate(info.samplerate, p)  # before a block is sized by it
    return info


class AudioBlocks:
    """Blocks ``[C, n]`` (float32) of an audio file at ``rate`` Hz with ``channels`` channels.

    Args:
        path: The audio file.
        rate: Sample rate to deliver.
        channels: Channels to deliver.
        block_seconds: Source seconds read per block.
    """

    def __init__(self, path: str | os.PathLike, rate: int, channels: int,
                 block_seconds: float = BLOCK_SECONDS) -> None:  # fmt: skip
        self.path, self.rate, self.channels = Path(path), rate, channels
        info = audio_info(path)
        self.source_rate, self.source_channels = info.samplerate, info.channels
        self.source_frames = info.frames
        self.block = max(1, int(block_seconds * info.samplerate))

    def __iter__(self) -> Iterator[np.ndarray]:
        resample = _Resampler(self.source_rate, self.rate, self.channels)
        try:
            with sf.SoundFile(str(self.path)) as f:
                for raw in f.blocks(self.block, dtype="float32", always_2d=True):
                    block = convert_channels(np.ascontiguousarray(raw.T), self.channels)
                    check_audio(block, str(self.path))
                    block = resample(block)
                    if block.shape[-1]:
                        yield block
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioError(f"{self.path}: cannot read audio: {one_line(err)}") from err
        tail = resample.flush()
        if tail.shape[-1]:
            yield tail


class _Resampler:
    """A stateful soxr stream over blocks ``[C, n]``, or nothing when the rates are equal."""

    def __init__(self, from_rate: int, to_rate: int, channels: int) -> None:
        self.channels = channels
        self._stream = None
        if from_rate != to_rate:
            self._stream = soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32",
                                               quality=SOXR_QUALITY)  # fmt: skip

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return np.ascontiguousarray(block)
        out = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last)
        return np.ascontiguousarray(out.T)

    def flush(self) -> np.ndarray:
        """What the filter still owes at the end of the signal."""
        return self(np.zeros((self.channels, 0), np.float32), last=True)


class AudioSink:
    """Writes blocks ``[C, n]`` given at ``from_rate`` to an audio file at ``rate``, atomically.

    Every format and strategy of :func:`audiotok.audio.write.write_audio`, in memory bounded
    by the block size: ``clip`` (the default) and ``none`` act block by block; ``peak``,
    ``rms`` and ``loudness`` need the whole signal's level, so the blocks first go to a
    temporary float32 file beside the target while a :class:`~audiotok.audio.write.LevelMeter`
    measures them, and are scaled and encoded from it at :meth:`close`. Samples are quantised
    and encoded as ``write_audio`` does them (mp3 and Opus at 48 kHz where the rate is not one
    they take). The file appears at ``target`` when :meth:`close` succeeds; an error leaves
    nothing behind.

    Args:
        target: The output path; its suffix picks the format.
        rate: The signal's sample rate (that of the file but for mp3 and Opus, see above).
        channels: The file's channels (blocks are converted).
        from_rate: Rate of the blocks given to :meth:`write`.
        length: Samples at ``rate`` the signal must have: trimmed or zero-padded to it.
        overwrite: Whether an existing file may be replaced.
        normalization: How to bring the audio into [-1, 1]; None for ``clip``.
        bitrate_kbps: Bitrate of mp3, Opus or Vorbis, as for ``write_audio``.
    """

    def __init__(self, target: str | os.PathLike, rate: int, channels: int, *, from_rate: int,
                 length: int | None = None, overwrite: bool = False,
                 normalization: Normalization | None = None,
                 bitrate_kbps: float | None = None) -> None:  # fmt: skip
        self.target = Path(target)
        fmt = audio_format(self.target)
        self.channels, self.length, self.written = channels, length, 0
        self.norm = normalization or Normalization("clip")
        self._pcm16 = FORMATS[fmt][1] == "PCM_16"
        self._from = _Resampler(from_rate, rate, channels)
        out_rate = file_rate(fmt, rate)
        self._to_file = _Resampler(rate, out_rate, channels)
        self._atomic = atomic_path(self.target, overwrite, AudioError)
        tmp = self._atomic.__enter__()
        self._level_path: Path | None = None
        try:
            self._file = sound_file(tmp, fmt, out_rate, channels, FORMATS[fmt][1], bitrate_kbps,
                                    self.target)  # fmt: skip
            self._meter = None
            if self.norm.needs_level:
                self._meter = self.norm.meter(rate, channels)
                fd, name = tempfile.mkstemp(prefix=f".{temp_stem(self.target.name)}.",
                                            suffix=".level.tmp",
                                            dir=self.target.parent)  # fmt: skip
                os.close(fd)
                self._level_path = Path(name)
                # RF64: a float32 WAV of more than 4 GB (about 6 hours of stereo at 48 kHz).
                self._level = sf.SoundFile(name, "w", rate, channels, "FLOAT", format="RF64")
        except BaseException as err:
            self._cleanup(err)
            raise

    def _encode(self, block: np.ndarray, last: bool = False) -> None:
        """Writes samples already in [-1, 1] (at ``rate``) to the file."""
        block = self._to_file(block, last)
        if block.shape[-1]:
            self._file.write((pcm16(block) if self._pcm16 else block).T)

    def _emit(self, block: np.ndarray) -> None:
        """Takes samples at ``rate``, trimmed to ``length``."""
        if self.length is not None:
            block = block[:, : max(0, self.length - self.written)]
        if not block.shape[-1]:
            return
        self.written += block.shape[-1]
        if self._meter is None:
            self._encode(self.norm.apply(block, 1.0, str(self.target)))
        else:
            self._meter.add(block)
            self._level.write(block.T)

    def write(self, block: Any) -> None:
        """Appends ``[C', n]`` samples at ``from_rate``."""
        block = convert_channels(np.asarray(block, dtype=np.float32), self.channels)
        if block.shape[-1]:  # (streams may give nothing for a while)
            check_audio(block, str(self.target))
        self._guard(lambda: self._emit(self._from(block)))

    def _guard(self, work: Any) -> None:
        try:
            work()
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise AudioError(f"{self.target}: cannot write audio: {one_line(err)}") from err

    def _finish(self) -> None:
        self._emit(self._from.flush())
        # Padded a block at a time: one array of the whole gap would need memory that grows
        # with the length asked for (7.7 GiB for 24 h), when the point is to stay bounded.
        while self.length is not None and self.written < self.length:
            gap = min(self.length - self.written, BLOCK_FRAMES)
            self._emit(np.zeros((self.channels, gap), np.float32))
        if self._meter is not None:
            gain = self.norm.gain(self._meter)
            self._level.close()
            with sf.SoundFile(str(self._level_path)) as f:
                for raw in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                    self._encode(self.norm.apply(np.ascontiguousarray(raw.T), gain,
                                                 str(self.target)))  # fmt: skip
        self._encode(np.zeros((self.channels, 0), np.float32), last=True)  # the filter's tail
        self._file.close()

    def close(self) -> Path:
        """Flushes, pads to ``length``, normalises if needed, and moves the file into place."""
        try:
            self._guard(self._finish)
        except BaseException as err:
            self._cleanup(err)
            raise
        self._cleanup(None)
        return self.target

    def abort(self) -> None:
        """Discards what was written."""
        self._cleanup(AudioError("aborted"))

    def _cleanup(self, error: BaseException | None) -> None:
        """Closes the files; moves the output into place (no error) or removes it."""
        for f in (getattr(self, "_file", None), getattr(self, "_level", None)):
            if f is not None and not f.closed:
                f.close()
        if self._level_path is not None:
            self._level_path.unlink(missing_ok=True)
        if error is None:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(type(error), error, None)

    def __enter__(self) -> AudioSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
