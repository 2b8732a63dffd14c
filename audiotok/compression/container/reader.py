"""``AtokReader``: parses an ``.atok`` stream packet by packet, seeking when it can.

Reading is sequential by default (so pipes work) and stops at the index. With a seekable
source, :meth:`AtokReader.index` loads the seek index from the trailer and
:meth:`AtokReader.read_packet` fetches one packet on demand.

Damage handling: in strict mode the first damaged packet raises its ``FormatError``; with
``recover=True`` a damaged packet is skipped, the stream is searched for the next sync word,
and the frames lost are recorded in :attr:`AtokReader.damage`. Either way a stream that just
ends (a truncated file) yields every complete packet, and :attr:`AtokReader.truncated_at`
says where the data stopped: whether that is an error is for the caller to say
(:func:`audiotok.compression.decode.decode_stream` raises unless recovering). Every ``FormatError``
starts with the file's name, when the source has one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ...errors import CorruptDataError, FormatError, TruncatedError
from .coders import coder_for_id
from .entropy import EntropyCoder
from .header import PREFIX_SIZE, Header
from .index import MAGIC as INDEX_MAGIC
from .index import TRAILER_SIZE, Index, check_index
from .packet import SYNC, Packet

SCAN_BLOCK = 1 << 16


@dataclass
class Damage:
    """A stretch of the stream that could not be decoded.

    Attributes:
        offset: Byte offset where the damage was found.
        reason: What was wrong.
        first_frame: First frame lost (known once the next good packet is found).
        num_frames: Frames lost, or None when unknown (damage up to the end).
    """

    offset: int
    reason: str
    first_frame: int
    num_frames: int | None = None


class _Source:
    """A forward-only byte source over a file object, with look-ahead and absolute offsets."""

    def __init__(self, file: BinaryIO, start: int) -> None:
        self.file, self.pos, self.buf = file, start, b""

    def peek(self, n: int) -> bytes:
        while len(self.buf) < n:
            more = self.file.read(max(n - len(self.buf), SCAN_BLOCK))
            if not more:
                break
            self.buf += more
        return self.buf[:n]

    def skip(self, n: int) -> None:
        self.peek(n)
        n = min(n, len(self.buf))
        self.buf, self.pos = self.buf[n:], self.pos + n

    def resync(self) -> bool:
        """Skips to the next packet sync word or index magic; False at the end of the data."""
        self.skip(1)
        while True:
            self.peek(SCAN_BLOCK)
            hits = [i for i in (self.buf.find(SYNC), self.buf.find(INDEX_MAGIC)) if i >= 0]
            if hits:
                self.skip(min(hits))
                return True
            if len(self.buf) < 4:
                return False
            self.skip(len(self.buf) - 3)  # keep 3 bytes: a magic may straddle the blocks


class AtokReader:
    """Reads an ``.atok`` stream.

    Args:
        source: Bytes, a path, or a binary file object positioned at the stream's start.
        priors: Static entropy-coder priors ``[K_max, cardinality]`` if the stream uses them
            (from the codec's card); may also be set as :attr:`priors` before reading packets.

    Attributes:
        name: The file's name, which every ``FormatError`` raised starts with; None for bytes
            and unnamed file objects.

    Raises:
        FormatError: The header is missing, damaged or unsupported.
    """

    def __init__(self, source: bytes | str | os.PathLike | BinaryIO, *, priors=None) -> None:
        opened = isinstance(source, (str, os.PathLike))
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        elif opened:
            source = open(source, "rb")  # noqa: SIM115 - closed by close()
        self.file: BinaryIO = source
        name = getattr(source, "name", None)
        self.name: str | None = name if isinstance(name, str) else None
        self._start = self._tell()
        try:
            prefix = self.file.read(PREFIX_SIZE)
            size = Header.read_size(prefix)
            rest = self.file.read(size - len(prefix))
            self.header = Header.from_bytes(prefix + rest)
        except FormatError as exc:
            if opened:  # the caller gets no reader to close
                self.file.close()
            exc.in_file(self.name)
            raise
        self.header_size = size
        self.priors = priors
        self._coder: EntropyCoder | None = None
        self.damage: list[Damage] = []
        self.truncated_at: int | None = None
        self.trailing_at: int | None = None  # where ignored data after the trailer starts
        self.stream_index: Index | None = None

    @property
    def coder(self) -> EntropyCoder:
        """The stream's entropy coder, built on first use (set :attr:`priors` before)."""
        if self._coder is None:
            h = self.header
            priors = None if self.priors is None else self.priors[: h.num_codebooks]
            self._coder = coder_for_id(h.coder_id).from_params(
                h.cardinality, h.num_codebooks, h.coder_params, priors
            )
        return self._coder

    def _tell(self) -> int | None:
        try:
            return self.file.tell() if self.file.seekable() else None
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> AtokReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def decode(self, packet: Packet, offset: int = 0) -> np.ndarray:
        """The codes ``[K, num_frames]`` of a packet.

        Raises:
            CorruptDataError: The payload does not decode (a CRC-valid but inconsistent packet).
        """
        try:
            codes = self.coder.decode(packet.payload, packet.num_frames)
        except FormatError as exc:
            message = f"packet {packet.sequence}: {exc.message}"
            raise CorruptDataError(message, offset).in_file(self.name) from None
        return codes

    def packets(self, *, recover: bool = False) -> Iterator[tuple[int, Packet]]:
        """Yields ``(offset, packet)`` for every good packet, in order, verifying each.

        Stops at the index (kept in :attr:`stream_index`) or at the end of the data (then
        :attr:`truncated_at` is set). Damage raises, or with ``recover`` is skipped and
        recorded in :attr:`damage`.
        """
        try:
            yield from self._packets(recover)
        except FormatError as exc:
            exc.in_file(self.name)
            raise

    def _packets(self, recover: bool) -> Iterator[tuple[int, Packet]]:
        if self._start is not None:
            self.file.seek(self._start + self.header_size)
        src = _Source(self.file, self.header_size)
        fixed = Packet.fixed_size(self.header)
        fpp = self.header.frames_per_packet
        expected = end = 0
        while True:
            at = src.pos
            magic = src.peek(4)
            if len(magic) < 4:
                self.truncated_at = at
                return
            try:
                if magic == INDEX_MAGIC:
                    size = Index.record_size(src.peek(32), at)
                    self.stream_index = Index.from_bytes(src.peek(size), at)
                    src.skip(size)
                    if Index.trailer_offset(src.peek(TRAILER_SIZE)) != at:
                        raise CorruptDataError("the trailer does not point to the index", src.pos)
                    break  # checked below: an index that lies is no damage to skip over
                Packet.parse_prefix(src.peek(fixed), self.header, at, self.coder)
                data = src.peek(fixed + self._payload_size(src, fixed) + 4)
                packet = Packet.from_bytes(data, self.header, at, self.coder)
            except FormatError as exc:
                # Data that ends mid-structure is a truncated file, unless more structures
                # follow: then a damaged size field made it look so.
                if isinstance(exc, TruncatedError) and not src.resync():
                    self.truncated_at = at
                    return
                if not recover:
                    if isinstance(exc, TruncatedError):
                        exc = CorruptDataError(f"damaged structure ({exc.message})", at)
                    raise exc
                self._mark_damage(at, exc.message, expected * fpp)
                if not isinstance(exc, TruncatedError) and not src.resync():
                    self.truncated_at = src.pos
                    return
                continue
            if packet.sequence != expected:
                if packet.sequence < expected or not recover:
                    raise CorruptDataError(
                        f"packet {packet.sequence} where {expected} was expected", at
                    )
                self._mark_damage(at, f"packets {expected} to {packet.sequence - 1} missing",
                                  expected * fpp)  # fmt: skip
            self._close_damage(packet.first_frame)
            yield at, packet
            src.skip(packet.size())
            expected, end = packet.sequence + 1, packet.first_frame + packet.num_frames
        self._check_end(expected, end, at, recover)
        self._check_nothing_follows(src, recover)

    @staticmethod
    def _payload_size(src: _Source, fixed: int) -> int:
        return int.from_bytes(src.peek(fixed)[fixed - 4 : fixed], "big")

    def _mark_damage(self, offset: int, reason: str, first_frame: int) -> None:
        """Opens a damaged stretch at ``first_frame``, unless one is open already."""
        if not self.damage or self.damage[-1].num_frames is not None:
            self.damage.append(Damage(offset, reason, first_frame))

    def _close_damage(self, next_frame: int) -> None:
        """Ends the open damaged stretch, if any, where good frames resume."""
        if self.damage and self.damage[-1].num_frames is None:
            self.damage[-1].num_frames = next_frame - self.damage[-1].first_frame

    def _check_end(self, expected: int, end: int, offset: int, recover: bool) -> None:
        """Checks the index at ``offset`` against the ``expected`` packets, which ended at
        frame ``end``, and against the header."""
        index = self.stream_index
        if index is None:
            return
        if len(index.entries) != expected:
            if not recover:
                raise CorruptDataError(
                    f"the index lists {len(index.entries)} packets, the stream has {expected}",
                    offset,
                )
            self._mark_damage(offset, "packets missing before the index",
                              expected * self.header.frames_per_packet)  # fmt: skip
        # Even recovering: which of two contradicting lengths is true can't be told.
        check_index(self.header, index, offset)
        if not self.damage and end != index.total_frames:
            raise CorruptDataError(
                f"the index says {index.total_frames} frames, the packets hold {end}", offset
            )
        self._close_damage(index.total_frames)

    def _check_nothing_follows(self, src: _Source, recover: bool) -> None:
        """The trailer ends the stream: bytes after it (``cat a.atok b.atok``, a download
        with junk appended) make the file invalid, or, recovering, are left with a note in
        :attr:`trailing_at`; read silently, the second file would be lost unnoticed."""
        end = src.pos + TRAILER_SIZE
        if len(src.peek(TRAILER_SIZE + 1)) <= TRAILER_SIZE:
            return
        if not recover:
            raise CorruptDataError("data after the end of the stream (a file appended?)", end)
        self.trailing_at = end

    def index(self) -> Index | None:
        """The seek index from the trailer, if the source is seekable and the index intact.

        Raises:
            CorruptDataError: An intact index whose lengths contradict the header's.
        """
        if self._start is None:
            return None
        end = self.file.seek(0, io.SEEK_END)
        if end - self._start < self.header_size + TRAILER_SIZE:
            return None
        self.file.seek(end - TRAILER_SIZE)
        at = Index.trailer_offset(self.file.read(TRAILER_SIZE))
        if at is None or not self.header_size <= at < end - self._start:
            return None
        self.file.seek(self._start + at)
        try:
            record = self.file.read(end - self._start - at - TRAILER_SIZE)
            index = Index.from_bytes(record, at)
        except FormatError:
            return None
        try:
            check_index(self.header, index, at)
        except FormatError as exc:
            raise exc.in_file(self.name) from None
        return index

    def read_packet(self, offset: int) -> Packet:
        """The packet at byte ``offset`` of the stream (seekable sources only)."""
        if self._start is None:
            raise ValueError("random access needs a seekable source")
        self.file.seek(self._start + offset)
        fixed = Packet.fixed_size(self.header)
        prefix = self.file.read(fixed)
        try:
            *_, size = Packet.parse_prefix(prefix, self.header, offset, self.coder)
            data = prefix + self.file.read(size + 4)
            return Packet.from_bytes(data, self.header, offset, self.coder)
        except FormatError as exc:
            exc.in_file(self.name)
            raise
