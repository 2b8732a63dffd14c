"""Compression: one signal through the tokenizer interface into an ``.atok`` stream.

Example:
    >>> codec = audiotok.load_codec("encodec_24khz")                          # doctest: +SKIP
    >>> data = audiotok.compress(codec, wav, sample_rate=44_100, bandwidth=6.0)
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

from ..codec.base import Codec
from ..codec.tokens import Tokens
from ..errors import TokensError
from .channels import coded_channels
from .container.writer import DEFAULT_PACKET_SECONDS, AtokWriter


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
    # Given as is: Codec.encode refuses 44100.7 rather than recording it as 44100.
    tokens = codec.encode(wav, sample_rate=sample_rate, bandwidth=bandwidth)
    rate = codec.sample_rate if sample_rate is None else int(sample_rate)
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
