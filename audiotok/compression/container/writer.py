"""``AtokWriter``: tokens in, chunk by chunk, ``.atok`` bytes out, without seeking back.

Example:
    >>> with open("out.atok", "wb") as f, AtokWriter.for_codec(f, codec, bandwidth=6.0) as w:
    ...     for chunk in chunks:                       # Tokens of consecutive audio
    ...         w.write_tokens(chunk)                  # doctest: +SKIP
"""

from __future__ import annotations

from fractions import Fraction
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from ...errors import TokensError
from .coders import coder_for_name
from .entropy import EntropyCoder
from .header import Header
from .index import Index
from .packet import Packet

DEFAULT_PACKET_SECONDS = 1.0


MAX_PACKET_SECONDS = 3600.0
"""The longest packet taken: a packet is what a damaged file loses, and what a streamed
decoder holds at once."""


def header_for_codec(
    codec: Any,
    *,
    bandwidth: float,
    coder: EntropyCoder,
    length: int | None = None,
    original_sample_rate: int | None = None,
    original_channels: int | None = None,
    original_length: int | None = None,
    metadata: dict[str, str] | None = None,
    packet_seconds: float = DEFAULT_PACKET_SECONDS,
) -> Header:
    """The header for tokens of ``codec`` at ``bandwidth``.

    Segmented codecs (48 kHz) put exactly one segment, and its scale, in each packet; others
    put ``round(packet_seconds * frame_rate)`` frames in each packet.

    Raises:
        ValueError: ``packet_seconds`` not in (0, :data:`MAX_PACKET_SECONDS`] (1e9 s overflowed
            the header's 32-bit frame count in ``struct``).
    """
    if not 0 < packet_seconds <= MAX_PACKET_SECONDS:
        raise ValueError(
            f"packet_seconds must be in (0, {MAX_PACKET_SECONDS:g}], not {packet_seconds}"
        )
    frame_rate = Fraction(codec.sample_rate, codec.hop_length)
    if codec.segments is None:
        frames_per_packet = max(1, round(packet_seconds * frame_rate))
        segment_length = segment_stride = 0
    else:
        segment_length, segment_stride = codec.segments
        frames_per_packet = -(-segment_length // codec.hop_length)
    return Header(
        model_id=codec.model_id,
        fingerprint=codec.fingerprint(),
        sample_rate=codec.sample_rate,
        channels=codec.channels,
        frame_rate=frame_rate,
        cardinality=codec.cardinality,
        num_codebooks=codec.num_codebooks(bandwidth),
        bandwidth_bps=round(bandwidth * 1000),
        length=length,
        original_sample_rate=original_sample_rate or codec.sample_rate,
        original_channels=original_channels or codec.channels,
        original_length=original_length,
        segment_length=segment_length,
        segment_stride=segment_stride,
        frames_per_packet=frames_per_packet,
        scales_per_packet=1 if codec.has_scales else 0,
        coder_id=coder.coder_id,
        coder_params=coder.params(),
        metadata=dict(metadata or {}),
    )


class AtokWriter:
    """Writes an ``.atok`` stream: the header at once, packets as frames arrive, then the index.

    Args:
        file: A binary file object; only ``write`` is used, so a pipe works.
        header: The stream's header; ``length`` may be None and given to :meth:`close`.
        coder: The entropy coder the header names.
    """

    def __init__(self, file: BinaryIO, header: Header, coder: EntropyCoder) -> None:
        self.file, self.header, self.coder = file, header, coder
        self._pending = np.zeros((header.num_codebooks, 0), dtype=np.int64)
        self._scales: list[float] = []
        self._entries: list[tuple[int, int]] = []
        self._frames = 0
        self._closed = False
        self._offset = self._emit(header.to_bytes())

    @classmethod
    def for_codec(
        cls,
        file: BinaryIO,
        codec: Any,
        *,
        bandwidth: float | None = None,
        entropy: str = "adaptive",
        **header_fields: Any,
    ) -> AtokWriter:
        """A writer for tokens of ``codec``; ``header_fields`` go to :func:`header_for_codec`."""
        bandwidth = codec.check_bandwidth(bandwidth)
        num_codebooks = codec.num_codebooks(bandwidth)
        coder_cls = coder_for_name(entropy)
        priors = codec.entropy_priors
        if coder_cls.name == "adaptive" and priors is not None:
            coder = coder_cls(codec.cardinality, num_codebooks, priors=priors[:num_codebooks])
        else:
            coder = coder_cls(codec.cardinality, num_codebooks)
        header = header_for_codec(codec, bandwidth=bandwidth, coder=coder, **header_fields)
        return cls(file, header, coder)

    def _emit(self, data: bytes) -> int:
        self.file.write(data)
        return len(data)

    def write(self, codes: Any, scales: Any = None) -> None:
        """Appends frames.

        Args:
            codes: Codes ``[K, f]`` (or ``[1, K, f]``), numpy or torch, continuing the stream.
            scales: For segmented codecs, the scales of the segments that start in ``codes``.
        """
        if self._closed:
            raise ValueError("the writer is closed")
        codes = np.asarray(codes.cpu() if hasattr(codes, "cpu") else codes, dtype=np.int64)
        if codes.ndim == 3 and codes.shape[0] == 1:
            codes = codes[0]
        if codes.ndim != 2 or codes.shape[0] != self.header.num_codebooks:
            raise ValueError(
                f"codes must be [{self.header.num_codebooks}, frames], got {codes.shape}"
            )
        if scales is not None:
            scales = np.asarray(scales.cpu() if hasattr(scales, "cpu") else scales).reshape(-1)
            self._scales += [float(s) for s in scales]
        self._pending = np.concatenate([self._pending, codes], axis=1)
        while self._pending.shape[1] >= self.header.frames_per_packet:
            self._flush(self.header.frames_per_packet)

    def write_tokens(self, tokens: Any) -> None:
        """Appends a chunk of :class:`~audiotok.codec.tokens.Tokens` (batch size 1)."""
        if tokens.batch_size != 1:
            raise ValueError(f"an .atok stream holds one signal, not {tokens.batch_size}")
        if tokens.num_codebooks != self.header.num_codebooks:
            raise ValueError(
                f"tokens have {tokens.num_codebooks} codebooks; the stream has "
                f"{self.header.num_codebooks}"
            )
        self.write(tokens.codes[0], None if tokens.scales is None else tokens.scales[0])

    def _flush(self, n: int) -> None:
        codes, self._pending = self._pending[:, :n], self._pending[:, n:]
        sequence = len(self._entries)
        count = self.header.scales_per_packet
        if len(self._scales) < count:
            raise ValueError(f"packet {sequence} needs a segment scale; none was given")
        scales, self._scales = tuple(self._scales[:count]), self._scales[count:]
        packet = Packet(sequence, self._frames, n, scales, self.coder.encode(codes))
        self._entries.append((self._frames, self._offset))
        self._offset += self._emit(packet.to_bytes())
        self._frames += n

    def close(self, length: int | None = None, original_length: int | None = None) -> None:
        """Writes the last packet, the index and the trailer.

        Args:
            length: Samples at the codec's rate, if the header did not say.
            original_length: Samples of the original audio, if the header did not say.
        """
        if self._closed:
            return
        if self._pending.shape[1]:
            self._flush(self._pending.shape[1])
        if self._scales:
            # Two short last segments (one packet's worth of frames, two scales): format 1.0
            # puts one segment in each packet and only the last may be short.
            raise TokensError(
                "this signal's last two segments are both shorter than a full segment, which "
                ".atok 1.0 can't hold (about 1 length in 300 at 48 kHz); pad or trim it by "
                "10 ms"
            )
        self._closed = True
        length = length if length is not None else self.header.length
        if length is None:
            length = int(self._frames * self.header.hop_length)
        original = original_length if original_length is not None else self.header.original_length
        index = Index(self._entries, self._frames, length, original)
        self._offset += self._emit(index.to_bytes(self._offset))

    def __enter__(self) -> AtokWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On error, leave the stream without an index: readers see it as truncated.
        if exc_type is None:
            self.close()
