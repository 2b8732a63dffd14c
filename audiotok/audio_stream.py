"""Audio files read and written block by block, for signals of any length in bounded memory.

:class:`AudioBlocks` reads a file in blocks, converting channels (the policy of
:func:`audiotok.audio.convert_audio`) and resampling with a stateful soxr stream;
:class:`AudioSink` writes blocks, resampling back, to a temporary file that becomes the target
only once complete. Memory stays that of one block, whatever the file's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .audio import SOXR_QUALITY, check_audio, convert_channels, one_line
from .audio_output import FORMATS, pcm16
from .errors import AudioError
from .fileio import atomic_path

BLOCK_SECONDS = 10.0


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """libsndfile's description of an audio file (rate, channels, frames), or AudioError."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such file")
    try:
        return sf.info(str(p))
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{p}: cannot read audio: {one_line(err)}") from err


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
        stream = None
        if self.source_rate != self.rate:
            stream = soxr.ResampleStream(self.source_rate, self.rate, self.channels,
                                         dtype="float32", quality=SOXR_QUALITY)  # fmt: skip
        try:
            with sf.SoundFile(str(self.path)) as f:
                for raw in f.blocks(self.block, dtype="float32", always_2d=True):
                    block = convert_channels(np.ascontiguousarray(raw.T), self.channels)
                    check_audio(block, str(self.path))
                    if stream is not None:
                        block = stream.resample_chunk(np.ascontiguousarray(block.T)).T
                    if block.shape[-1]:
                        yield np.ascontiguousarray(block)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioError(f"{self.path}: cannot read audio: {one_line(err)}") from err
        if stream is not None:
            tail = stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
            if len(tail):
                yield np.ascontiguousarray(tail.T)


class AudioSink:
    """Writes blocks ``[C, n]`` given at ``from_rate`` to an audio file at ``rate``, atomically.

    Samples are clipped to [-1, 1] (other normalisations need the whole signal); wav and flac
    are 16-bit PCM quantised as :func:`audiotok.audio_output.write_audio` does. The file
    appears at ``target`` when :meth:`close` succeeds; an error leaves nothing behind.

    Args:
        target: The output path; its suffix picks the format.
        rate: The file's sample rate.
        channels: The file's channels (blocks are converted).
        from_rate: Rate of the blocks given to :meth:`write`.
        length: Samples the file must have: the stream is trimmed or zero-padded to it.
        overwrite: Whether an existing file may be replaced.
    """

    def __init__(self, target: str | os.PathLike, rate: int, channels: int, *, from_rate: int,
                 length: int | None = None, overwrite: bool = False) -> None:  # fmt: skip
        self.target = Path(target)
        fmt = self.target.suffix.lstrip(".").lower()
        if fmt not in ("wav", "flac"):
            raise AudioError(f"{self.target}: long files are written as .wav or .flac only")
        container, subtype, _ = FORMATS[fmt]
        self.channels, self.length, self.written = channels, length, 0
        self._atomic = atomic_path(self.target, overwrite, AudioError)
        tmp = self._atomic.__enter__()
        self._file = sf.SoundFile(tmp, "w", rate, channels, subtype, format=container)
        self._stream = None
        if from_rate != rate:
            self._stream = soxr.ResampleStream(from_rate, rate, channels, dtype="float32",
                                               quality=SOXR_QUALITY)  # fmt: skip

    def _emit(self, block: np.ndarray) -> None:
        if self.length is not None:
            block = block[:, : max(0, self.length - self.written)]
        if block.shape[-1]:
            self._file.write(pcm16(np.clip(block, -1.0, 1.0)).T)
            self.written += block.shape[-1]

    def write(self, block: Any) -> None:
        """Appends ``[C', n]`` samples at ``from_rate``."""
        block = convert_channels(np.asarray(block, dtype=np.float32), self.channels)
        if self._stream is not None:
            block = self._stream.resample_chunk(np.ascontiguousarray(block.T)).T
        self._emit(block)

    def close(self) -> Path:
        """Flushes, pads to ``length``, and moves the file into place."""
        if self._stream is not None:
            tail = self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
            self._emit(np.ascontiguousarray(tail.T))
        if self.length is not None and self.written < self.length:
            self._emit(np.zeros((self.channels, self.length - self.written), np.float32))
        self._file.close()
        self._atomic.__exit__(None, None, None)
        return self.target

    def abort(self) -> None:
        """Discards what was written."""
        self._file.close()
        error = AudioError("aborted")
        self._atomic.__exit__(type(error), error, None)

    def __enter__(self) -> AudioSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
