"""Compression: audio to ``.atok`` bytes and back, through the tokenizer interface.

Example:
    >>> codec = audiotok.load_codec("encodec_24khz")                          # doctest: +SKIP
    >>> data = audiotok.compress(codec, wav, sample_rate=44_100, bandwidth=6.0)
    >>> audio, rate = audiotok.decompress(data)     # [C, T] at 44.1 kHz, like the input

Decoding a whole file gives exactly ``codec.decode(codec.encode(x))`` (then converted back to
the input's rate and channels). A damaged or truncated file is a :class:`FormatError`, unless
asked to conceal (``recover=True``): damaged or missing packets are then silence of the right
length, so the timing of the rest is kept, and :meth:`Decoded.problems` says what was lost.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .audio import can_convert_channels, convert_audio, read_audio
from .codec.base import Codec
from .codec.tokens import Tokens
from .errors import (
    TRUNCATED_HINT,
    AudioError,
    FormatError,
    TokensError,
    TruncatedError,
    hint_damage,
)
from .formats.header import Header
from .formats.reader import AtokReader, Damage
from .formats.writer import DEFAULT_PACKET_SECONDS, AtokWriter

Source = bytes | str | os.PathLike | BinaryIO


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


def _channels_error(name: str | None, problem: str, option: str, how: str) -> AudioError:
    """``NAME: PROBLEM; pass OPTION=True HOW``, on the command line ``use --OPTION HOW``."""
    what = f"{name}: {problem}; " if name else f"{problem}; "
    return AudioError(f"{what}pass {option}=True{how}").for_cli(f"{what}use --{option}{how}")


def coded_channels(
    codec: Codec, channels: int, downmix: bool = False, name: str | None = None
) -> int:
    """The original channel count a compressed file records for audio of ``channels``.

    Decompression converts the codec's channels back to that count by the policy of
    :func:`~audiotok.audio.convert_audio`, which can't make 3 or more channels out of mono or
    stereo. Such audio is refused unless ``downmix``: the codec then codes its conversion (the
    average of all channels for mono models, the first two for stereo ones) and the file
    records the codec's channels, so that it decompresses to what was coded rather than to
    copies posing as the original layout.

    Raises:
        AudioError: Audio whose channels decompression could not give back, without
            ``downmix``; the message starts with ``name``, the audio's file, if given.
    """
    ours = codec.channels
    if downmix and channels > ours:
        return ours
    if can_convert_channels(ours, channels):
        return channels
    coded = "their average" if ours == 1 else "the first two, front left and right"
    problem = (
        f"{channels} channels, but {codec.model_id} codes {_layout(ours)}, "
        f"which can't give {channels} back"
    )
    raise _channels_error(
        name, problem, "downmix", f" to code {coded} (decompressed as {_layout(ours)})"
    )


def _check_restorable(header: Header, name: str | None) -> None:
    """Raises unless the file's channels convert back to the original's.

    Files written before compression refused such audio (8 channels coded as mono, say) can
    only be decoded as coded.
    """
    coded, original = header.channels, header.original_channels
    if can_convert_channels(coded, original):
        return
    problem = (
        f"the original had {original} channels, coded as {_layout(coded)}, "
        f"which can't give {original} back"
    )
    raise _channels_error(
        name, problem, "native", f" to decode the {_layout(coded)} audio that was coded"
    )


def compress_to(
    file: BinaryIO,
    codec: Codec,
    wav: Any,
    sample_rate: int | None = None,
    bandwidth: float | None = None,
    *,
    entropy: str = "adaptive",
    metadata: dict[str, str] | None = None,
    packet_seconds: float = DEFAULT_PACKET_SECONDS,
    downmix: bool = False,
) -> Tokens:
    """Encodes ``wav`` and writes it as an ``.atok`` stream to ``file``; returns the tokens.

    Args:
        file: Binary file object (only written to: a pipe works).
        codec: The codec.
        wav: One signal ``[C, T]`` (torch or numpy).
        sample_rate: Its rate; None for the codec's.
        bandwidth: kbps; None for the codec's default.
        entropy: ``adaptive`` (rANS with adaptive models) or ``raw`` (bit packing).
        metadata: User key/value pairs stored in the header.
        packet_seconds: Audio per packet for unsegmented codecs.
        downmix: Code audio of more channels than the codec's as the codec's, and decompress
            it as such (see :func:`coded_channels`); without it, audio whose channels
            decompression could not give back (3 or more into a mono or stereo codec) is
            refused.
    """
    if getattr(wav, "ndim", 0) != 2:
        raise TokensError(f"compress takes one signal [C, T], not shape {list(wav.shape)}")
    original_channels = coded_channels(codec, wav.shape[0], downmix)
    rate = codec.sample_rate if sample_rate is None else int(sample_rate)
    tokens = codec.encode(wav, sample_rate=rate, bandwidth=bandwidth)
    with AtokWriter.for_codec(
        file,
        codec,
        bandwidth=tokens.bandwidth,
        entropy=entropy,
        length=tokens.length,
        original_sample_rate=rate,
        original_channels=original_channels,
        original_length=wav.shape[1],
        metadata=metadata,
        packet_seconds=packet_seconds,
    ) as writer:
        writer.write_tokens(tokens)
    return tokens


def compress(codec: Codec, wav: Any, sample_rate: int | None = None, bandwidth: float | None = None,
             **options: Any) -> bytes:  # fmt: skip
    """Compresses one signal ``[C, T]`` to ``.atok`` bytes (options as :func:`compress_to`)."""
    buffer = io.BytesIO()
    compress_to(buffer, codec, wav, sample_rate, bandwidth, **options)
    return buffer.getvalue()


@dataclass
class Decoded:
    """The result of decoding an ``.atok`` stream.

    Attributes:
        audio: ``[C, T]`` float32.
        sample_rate: Its rate.
        header: The stream's header.
        damage: Stretches that were damaged or missing (concealed with silence).
        truncated_at: Byte offset where the data ended early, or None.
        lost_frames: Frames that could not be decoded (damage and truncation).
    """

    audio: torch.Tensor
    sample_rate: int
    header: Header
    damage: list[Damage] = field(default_factory=list)
    truncated_at: int | None = None
    lost_frames: int = 0

    def problems(self) -> list[str]:
        """One line per problem found, for warnings."""
        rate = float(self.header.frame_rate)
        lines = [
            f"damaged at byte {d.offset}: {d.reason}; "
            + (f"{d.num_frames / rate:.2f} s concealed" if d.num_frames else "the rest lost")
            for d in self.damage
        ]
        if self.truncated_at is not None:
            lines.append(
                f"the data ends at byte {self.truncated_at} (truncated): "
                f"{self.lost_frames / rate:.2f} s lost in all"
            )
        return lines


def _resolve_codec(codec: Codec | str | os.PathLike | None, header: Header, device: Any) -> Codec:
    from .codec.load import load_codec

    if codec is None:
        from .codec.registry import find_card

        if find_card(header.model_id) is None:
            raise TokensError(
                f"the file was made by model {header.model_id!r}, which is not in the registry; "
                "give the codec (or -m NAME_OR_PATH)"
            )
        codec = header.model_id
    if not isinstance(codec, Codec):
        codec = load_codec(codec, device=device)
    checks = {
        "sample rate": (header.sample_rate, codec.sample_rate),
        "channels": (header.channels, codec.channels),
        "cardinality": (header.cardinality, codec.cardinality),
        "hop length": (header.hop_length, codec.hop_length),
        "segments": (
            (header.segment_length, header.segment_stride) if header.segment_length else None,
            codec.segments,
        ),
    }
    for what, (theirs, ours) in checks.items():
        if theirs != ours:
            raise TokensError(f"the file's {what} is {theirs}; {codec.model_id} has {ours}")
    if any(header.fingerprint) and header.fingerprint != codec.fingerprint():
        raise TokensError(
            f"the file was made with other weights than {codec.model_id}'s "
            f"(fingerprint {header.fingerprint.hex()} vs {codec.fingerprint().hex()})"
        )
    return codec


@dataclass
class _Run:
    """Consecutive good packets: their first frame, codes ``[K, f]`` pieces and scales."""

    first_frame: int
    codes: list[np.ndarray]
    scales: list[float]

    @property
    def end_frame(self) -> int:
        return self.first_frame + sum(c.shape[1] for c in self.codes)


def _decode_run(
    codec: Codec, header: Header, run: _Run, length: int, total_frames: int
) -> tuple[int, torch.Tensor]:
    """Decodes one run on its own: ``(first sample, audio [C, n])``.

    A run that reaches the end of the stream decodes to the end of the signal. One that stops
    early (before damage or truncation) decodes to where the next packet's audio would start;
    for segmented codecs the codec would then see a signal whose last segment is cut short, so
    the run is padded with a dummy tail segment, decoded, and cut before it.
    """
    codes = np.concatenate(run.codes, axis=1)
    scales = list(run.scales)
    hop, frames = int(header.hop_length), codes.shape[1]
    reaches_end = run.end_frame >= total_frames
    if header.segment_length == 0:
        start = run.first_frame * hop
        keep = length - start if reaches_end else frames * hop
        n = keep
    else:
        segment = run.first_frame // header.frames_per_packet
        start = segment * header.segment_stride
        segments = len(run.codes)
        n = (
            min(length, (segment + segments - 1) * header.segment_stride + header.segment_length)
            - start
        )
        keep = n if reaches_end else segments * header.segment_stride
        if not reaches_end:
            n += 1  # one more sample opens a dummy tail segment
            extra = codec.num_frames(n) - frames
            codes = np.concatenate([codes, np.zeros((codes.shape[0], extra), codes.dtype)], axis=1)
            scales.append(1.0)
    tokens = Tokens(
        torch.from_numpy(codes).unsqueeze(0),
        torch.tensor([scales], dtype=torch.float32) if header.scales_per_packet else None,
        n,
        header.sample_rate,
        header.bandwidth,
        codec.model_id,
    )
    return start, codec.decode(tokens)[0].cpu()[:, : min(keep, length - start)]


def decode_stream(
    source: Source,
    codec: Codec | str | os.PathLike | None = None,
    *,
    recover: bool = False,
    native: bool = False,
    device: str | torch.device = "cpu",
) -> Decoded:
    """Decodes an ``.atok`` stream into audio, reporting any damage.

    Args:
        source: Bytes, a path or a binary file object.
        codec: The codec (or its name or path); None for the model the header names.
        recover: Conceal damaged packets with silence instead of raising.
        native: Return audio at the codec's rate and channels instead of the original's.
        device: Where to load the codec when it is given by name.

    Raises:
        FormatError: The stream is unreadable, or (unless ``recover``) damaged or truncated
            (one that lacks only its index decodes whole, with :attr:`Decoded.truncated_at`).
        TokensError: The codec does not match the stream.
    """
    with AtokReader(source) as reader:
        header = reader.header
        if not native:
            _check_restorable(header, reader.name)
        codec = _resolve_codec(codec, header, device)
        reader.priors = codec.entropy_priors
        runs: list[_Run] = []
        try:
            for offset, packet in reader.packets(recover=recover):
                codes = reader.decode(packet, offset)
                if runs and runs[-1].end_frame == packet.first_frame:
                    runs[-1].codes.append(codes)
                    runs[-1].scales.extend(packet.scales)
                else:
                    runs.append(_Run(packet.first_frame, [codes], list(packet.scales)))
        except FormatError as exc:
            if not recover:
                hint_damage(exc)
            raise
        index = reader.stream_index
        damage, truncated_at = reader.damage, reader.truncated_at
    decoded_end = runs[-1].end_frame if runs else 0
    length = header.length if header.length is not None else (index.length if index else None)
    if header.length is not None:
        total_frames = header.num_frames()
    else:
        total_frames = index.total_frames if index else decoded_end
    lost = max(0, total_frames - sum(run.end_frame - run.first_frame for run in runs))
    if truncated_at is not None and not recover and (lost or length is None):
        raise _truncated(header, truncated_at, total_frames - lost, lost, length is not None,
                         reader.name)  # fmt: skip
    if length is None:
        length = decoded_end * int(header.hop_length)
    pieces = [_decode_run(codec, header, run, length, total_frames) for run in runs]
    audio = torch.zeros(header.channels, length)
    for start, piece in pieces:
        audio[:, start : start + piece.shape[-1]] = piece
    rate = header.sample_rate
    if not native and (
        header.original_sample_rate != rate or header.original_channels != header.channels
    ):
        if audio.shape[-1]:
            audio = convert_audio(
                audio, rate, header.original_sample_rate, header.original_channels
            )
        else:  # nothing decodable: soxr can't resample zero samples
            audio = torch.zeros(header.original_channels, 0)
        rate = header.original_sample_rate
        original = header.original_length if header.original_length is not None else (
            index.original_length if index else None
        )  # fmt: skip
        if original is not None:
            audio = torch.nn.functional.pad(audio, (0, max(0, original - audio.shape[-1])))
            audio = audio[:, :original]
    return Decoded(audio, rate, header, damage, truncated_at, lost)


def _truncated(header: Header, at: int, decoded: int, lost: int, known: bool,
               name: str | None) -> TruncatedError:  # fmt: skip
    """The error for a stream that ends ``lost`` frames early (``known``: if its length is)."""
    rate = float(header.frame_rate)
    if known:
        what = f"truncated: {lost / rate:.2f} s of {(decoded + lost) / rate:.2f} s missing"
    else:  # a streamed file cut before its index: how much is missing is unknown
        what = f"truncated after {decoded / rate:.2f} s"
    return TruncatedError(what, at).with_hint(*TRUNCATED_HINT).in_file(name)


def decompress(
    data: Source,
    codec: Codec | str | os.PathLike | None = None,
    *,
    recover: bool = False,
    native: bool = False,
) -> tuple[torch.Tensor, int]:
    """Decodes ``.atok`` data to ``(audio [C, T], sample_rate)``.

    By default the audio has the rate and channels of what was compressed. A damaged or
    truncated file raises ``FormatError``; with ``recover=True`` it decodes with what is
    missing as silence, and a warning says how much that is. See :func:`decode_stream` for
    the arguments.
    """
    result = decode_stream(data, codec, recover=recover, native=native)
    for line in result.problems():
        warnings.warn(line, stacklevel=2)
    return result.audio, result.sample_rate


STREAM_SECONDS = 20.0
"""Files longer than this are processed as streams, block by block, in bounded memory, when
the codec streams (``Codec.can_stream``) and one-pass ``exact`` processing is not asked for.

In one pass, memory grows with the length (a peak of 2.8 GiB to compress and decompress one
minute with the 24 kHz EnCodec architecture on a CPU, 13.6 GiB for nine); streamed, it stays
that of a 2 s block (under 0.5 GiB at any length: ``benchmarks/memory_bench.py``)."""


def compress_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    codec: Codec,
    *,
    bandwidth: float | None = None,
    overwrite: bool = False,
    downmix: bool = False,
    exact: bool = False,
    **options: Any,
) -> Tokens | None:
    """Compresses an audio file to an ``.atok`` file, atomically.

    Files longer than :data:`STREAM_SECONDS` go through the codec's streaming encoder, read
    and written block by block, so memory does not grow with the file (unsegmented codecs
    carry each layer's state from block to block, segmented ones code segment by segment; see
    ``Codec.can_stream``). Segmented codecs' streamed codes equal the one-pass ones. The
    others' do too, but where float rounding (different kernel shapes round differently, by
    about 1e-7) tips a near-tie between two code vectors: ``benchmarks/exactness_bench.py``
    counts those on real audio. ``exact=True`` codes in one pass in memory, as the reference
    model does, whatever the length.

    Args:
        input, output: The audio file and the ``.atok`` file to write.
        codec: The codec.
        bandwidth: kbps; None for the codec's default.
        overwrite: Whether an existing output may be replaced.
        downmix: As for :func:`compress_to`.
        exact: One pass in memory (memory grows with the length), never streamed.
        options: ``entropy``, ``metadata``, ``packet_seconds``, as for :func:`compress_to`.

    Returns:
        The tokens, or None for a streamed file (they were never all in memory).
    """
    from .audio_stream import audio_info
    from .compression_streams import compress_streaming
    from .fileio import atomic_output

    info = audio_info(input)
    # Refused before reading.
    channels = coded_channels(codec, info.channels, downmix, str(input))
    if streams(codec, info.frames / info.samplerate, exact):
        with atomic_output(Path(output), overwrite) as file:
            compress_streaming(file, Path(input), codec, bandwidth, original_channels=channels,
                               **options)  # fmt: skip
        return None
    wav, rate = read_audio(input)
    with atomic_output(Path(output), overwrite) as file:
        return compress_to(file, codec, wav, rate, bandwidth, downmix=downmix, **options)


def streams(codec: Codec, seconds: float, exact: bool = False) -> bool:
    """Whether a file of ``seconds`` is processed as a stream (see :data:`STREAM_SECONDS`)."""
    return codec.can_stream and not exact and seconds > STREAM_SECONDS


def decompress_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    codec: Codec | str | os.PathLike | None = None,
    *,
    recover: bool = False,
    native: bool = False,
    overwrite: bool = False,
    strategy: str = "clip",
    device: str | torch.device = "cpu",
    exact: bool = False,
) -> Decoded | None:
    """Decodes an ``.atok`` file to an audio file (format from its suffix), atomically.

    Streams longer than :data:`STREAM_SECONDS`, of a codec that can stream, are decoded packet
    by packet in bounded memory, to any format with any strategy (audio within 1e-5 of the
    one-pass decoder's; ``peak``, ``rms`` and ``loudness`` measure the level in a first pass
    through a temporary file beside the output); None is then returned. ``recover`` (which
    conceals damage) and ``exact`` decode in one pass in memory.

    Raises:
        FormatError: As :func:`decode_stream`; nothing is written then, not even a temporary.
    """
    from .audio_output import write_audio
    from .compression_streams import decompress_streaming

    with AtokReader(input) as reader:
        header, index = reader.header, reader.index()
    if not native:
        _check_restorable(header, str(input))
    length = header.length if header.length is not None else (index.length if index else 0)
    codec = _resolve_codec(codec, header, device)
    if not recover and streams(codec, length / header.sample_rate, exact):
        decompress_streaming(Path(input), Path(output), codec, overwrite=overwrite,
                             native=native, strategy=strategy)  # fmt: skip
        return None
    with open(input, "rb") as f:
        result = decode_stream(f, codec, recover=recover, native=native, device=device)
    write_audio(output, result.audio, result.sample_rate, strategy=strategy, overwrite=overwrite)
    return result
