"""Tokens-level access to ``.atok`` streams, for users who want codes rather than audio."""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import numpy as np

from ...codec.tokens import Tokens
from .reader import AtokReader
from .writer import AtokWriter


def write_tokens(file: BinaryIO, tokens: Tokens, codec: Any, *, entropy: str = "adaptive",
                 **header_fields: Any) -> None:  # fmt: skip
    """Writes ``tokens`` (batch size 1) of ``codec`` as an ``.atok`` stream."""
    with AtokWriter.for_codec(file, codec, bandwidth=tokens.bandwidth, entropy=entropy,
                              length=tokens.length, **header_fields) as writer:  # fmt: skip
        writer.write_tokens(tokens)


def read_tokens(source: bytes | str | os.PathLike | BinaryIO, framework: str = "pt") -> Tokens:
    """The tokens of a whole, undamaged ``.atok`` stream (no codec needed), as torch tensors
    (``framework="pt"``) or numpy arrays (``"np"``).

    Raises:
        FormatError: Damage, or a truncated stream (its tokens would not be the whole signal).
    """
    from ...errors import TruncatedError

    with AtokReader(source) as reader:
        pieces, scales = [], []
        for offset, packet in reader.packets():
            pieces.append(reader.decode(packet, offset))
            scales += packet.scales
        if reader.truncated_at is not None:
            raise TruncatedError(
                "the stream ends before its index: truncated", reader.truncated_at
            ).in_file(reader.name)
        header, index = reader.header, reader.stream_index
    codes = (
        np.concatenate(pieces, axis=1) if pieces else np.zeros((header.num_codebooks, 0), np.int64)
    )
    length = header.length if header.length is not None else index.length
    tokens = Tokens(
        codes[None],
        np.array([scales], np.float32) if header.scales_per_packet else None,
        length,
        header.sample_rate,
        header.bandwidth,
        header.model_id,
    )
    return tokens.as_framework(framework)
