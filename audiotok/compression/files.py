"""Compressing and decompressing files, atomically, streamed when they are long.

Example:
    >>> audiotok.compress_file("talk.flac", "talk.atok", codec, bandwidth=6.0)   # doctest: +SKIP
    >>> audiotok.decompress_file("talk.atok", "talk.wav")                         # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..audio.read import read_audio
from ..codec.base import Codec
from ..codec.tokens import Tokens
from .channels import check_restorable, coded_channels
from .container.reader import AtokReader
from .decode import Decoded, decode_stream, resolve_codec
from .encode import compress_to

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
    from ..audio.blocks import audio_info
    from ..runtime.files import atomic_output
    from .streams import compress_streaming

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


def encode_file(
    input: str | os.PathLike,
    codec: Codec,
    *,
    bandwidth: float | None = None,
    downmix: bool = False,
    exact: bool = False,
) -> Tokens:
    """The tokens of an audio file, for formats that hold all codes in one array (``.ecdc``):
    files longer than :data:`STREAM_SECONDS` are coded block by block as :func:`compress_file`
    codes them (memory holds the codes, not the audio), others in one pass (``exact``: always).

    Raises:
        AudioError: As :func:`compress_file` (unreadable audio, channels that need ``downmix``).
    """
    from ..audio.blocks import audio_info
    from .streams import encode_streaming

    info = audio_info(input)
    coded_channels(codec, info.channels, downmix, str(input))
    if streams(codec, info.frames / info.samplerate, exact):
        return encode_streaming(Path(input), codec, bandwidth)
    wav, rate = read_audio(input)
    return codec.encode(wav, sample_rate=rate, bandwidth=bandwidth)


def decode_tokens_file(
    tokens: Tokens,
    output: str | os.PathLike,
    codec: Codec,
    *,
    overwrite: bool = False,
    strategy: str = "clip",
    exact: bool = False,
) -> None:
    """Decodes one item's tokens to an audio file (format from its suffix), atomically, at the
    codec's rate: longer than :data:`STREAM_SECONDS`, as a stream in bounded memory (audio
    within 1e-5 of the one-pass decoder's, as :func:`decompress_file`), else (``exact``:
    always) in one pass.

    Raises:
        TokensError: Tokens of more than one item, or that ``codec`` can't decode.
    """
    from ..audio.write import write_audio
    from ..errors import TokensError
    from .streams import decode_tokens_streaming

    if tokens.batch_size != 1:
        raise TokensError(f"tokens of {tokens.batch_size} items; decode one at a time")
    if streams(codec, tokens.duration, exact):
        codec.check_tokens(tokens)  # as Codec.decode checks them on the other path
        decode_tokens_streaming(tokens, Path(output), codec, overwrite=overwrite,
                                strategy=strategy)  # fmt: skip
        return
    write_audio(output, codec.decode(tokens)[0], codec.sample_rate, strategy=strategy,
                overwrite=overwrite)  # fmt: skip


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
    device: Any = "cpu",
    exact: bool = False,
    backend: str = "torch",
) -> Decoded | None:
    """Decodes an ``.atok`` file to an audio file (format from its suffix), atomically.

    Streams longer than :data:`STREAM_SECONDS`, of a codec that can stream, are decoded packet
    by packet in bounded memory, to any format with any strategy (audio within 1e-5 of the
    one-pass decoder's; ``peak``, ``rms`` and ``loudness`` measure the level in a first pass
    through a temporary file beside the output); None is then returned. ``recover`` conceals
    damage: streamed too where the stream has its index (which bears out the length the
    silence reaches) and its codec is unsegmented, the returned :class:`Decoded` then without
    its ``audio`` (None); in one pass in memory otherwise, as ``exact`` always is. ``device``
    and ``backend``: how a codec given by name (or None: the header's) is loaded (see
    ``load_codec``).

    Raises:
        FormatError: As :func:`decode_stream`; nothing is written then, not even a temporary.
    """
    from ..audio.write import write_audio
    from .streams import decompress_streaming

    with AtokReader(input) as reader:
        header, index = reader.header, reader.index()
    if not native:
        check_restorable(header, str(input))
    length = header.length if header.length is not None else (index.length if index else 0)
    codec = resolve_codec(codec, header, device, backend)
    # A cut stream (no index) is recovered in memory, where what its unchecked length would
    # take is measured first; a stream with its index is padded only to the index's length.
    streamed_recovery = index is not None and not header.segment_length
    if streams(codec, length / header.sample_rate, exact) and (not recover or streamed_recovery):
        return decompress_streaming(Path(input), Path(output), codec, overwrite=overwrite,
                                    native=native, strategy=strategy, recover=recover)  # fmt: skip
    with open(input, "rb") as f:
        result = decode_stream(f, codec, recover=recover, native=native, device=device)
    write_audio(output, result.audio, result.sample_rate, strategy=strategy, overwrite=overwrite)
    return result
