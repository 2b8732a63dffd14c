"""The ``.atok`` seek index and the trailer that points to it.

After the last packet the writer appends the index record, then a 12-byte trailer::

    index:   "ATix" | num_packets u32 | total_frames u64 | length u64 | original_length u64 |
             num_packets x (first_frame u32, offset u64) | CRC-32 u32
    trailer: index_offset u64 | "ATIX"

The writer never seeks back, so files can be written to a pipe; a seeking reader finds the
index from the trailer, a sequential reader meets it after the last packet. The index also
holds the final lengths, which a streaming writer may not have known when writing the header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...errors import ChecksumError, CorruptDataError
from .binary import NO_LENGTH, Reader, crc32
from .header import Header, lengths_agree

MAGIC = b"ATix"
TRAILER_MAGIC = b"ATIX"
TRAILER_SIZE = 12
FIXED_SIZE = 32
ENTRY_SIZE = 12


@dataclass
class Index:
    """Where each packet starts, and the stream's final lengths.

    Attributes:
        entries: ``(first_frame, byte_offset)`` per packet, in order.
        total_frames: Frames in the stream.
        length: Samples per channel at the codec's rate.
        original_length: Samples per channel of the audio given to ``compress``, or None.
    """

    entries: list[tuple[int, int]]
    total_frames: int
    length: int
    original_length: int | None

    def to_bytes(self, offset: int) -> bytes:
        """The index record followed by the trailer, for an index starting at ``offset``."""
        body = MAGIC + struct.pack(
            ">IQQQ",
            len(self.entries),
            self.total_frames,
            self.length,
            NO_LENGTH if self.original_length is None else self.original_length,
        )
        body += b"".join(struct.pack(">IQ", frame, at) for frame, at in self.entries)
        body += struct.pack(">I", crc32(body))
        return body + struct.pack(">Q", offset) + TRAILER_MAGIC

    @staticmethod
    def record_size(data: bytes, offset: int) -> int:
        """The index record's size from its first bytes (at least :data:`FIXED_SIZE`)."""
        r = Reader(data[:FIXED_SIZE], offset)
        if r.take(4, "the index magic") != MAGIC:
            raise CorruptDataError("expected the index (magic ATix)", offset)
        return FIXED_SIZE + ENTRY_SIZE * r.u32("the index size") + 4

    @classmethod
    def from_bytes(cls, data: bytes, offset: int, file_size: int | None = None) -> Index:
        """Parses and verifies an index record starting at ``data[0]`` (file offset ``offset``).

        Raises:
            FormatError: Truncated, damaged, or pointing outside the file.
        """
        r = Reader(data, offset)
        if r.take(4, "the index magic") != MAGIC:
            raise CorruptDataError("expected the index (magic ATix)", offset)
        count, total_frames, length, original_length = r.unpack("IQQQ", "the index counts")
        if count * ENTRY_SIZE > r.remaining:
            raise CorruptDataError(f"index of {count} packets is larger than the data", offset + 4)
        entries = [r.unpack("IQ", "an index entry") for _ in range(count)]
        body_size = r.pos
        (stored,) = r.unpack("I", "the index CRC")
        if crc32(memoryview(data)[:body_size]) != stored:
            raise ChecksumError("index CRC mismatch: the index is damaged", offset + body_size)
        limit = offset if file_size is None else min(offset, file_size)
        previous_at = previous_frame = -1
        for frame, at in entries:
            if at >= limit or at <= previous_at or frame <= previous_frame or frame >= total_frames:
                raise CorruptDataError(f"index entry ({frame}, {at}) is out of order", offset)
            previous_at, previous_frame = at, frame
        return cls(
            [(int(f), int(a)) for f, a in entries],
            total_frames,
            length,
            None if original_length == NO_LENGTH else original_length,
        )

    @staticmethod
    def trailer_offset(trailer: bytes) -> int | None:
        """The index offset a trailer points to, or None if these bytes are no trailer."""
        if len(trailer) != TRAILER_SIZE or trailer[8:] != TRAILER_MAGIC:
            return None
        return struct.unpack(">Q", trailer[:8])[0]


def check_index(header: Header, index: Index, offset: int) -> None:
    """Checks that the index at ``offset`` agrees with the header and with its own entries.

    Decoders size their output from these lengths before (or without) counting the frames,
    so a length that the packets do not bear out (a 3 s stream whose header says 24 h, a
    30 s one said to be 25 s) would be a huge allocation or silently lost audio.

    Raises:
        CorruptDataError: At ``offset``, naming the lengths that disagree.
    """
    count, fpp, frames = len(index.entries), header.frames_per_packet, index.total_frames
    # Every packet but the last holds frames_per_packet frames, the last 1 to that many.
    if not (count - 1) * fpp < frames <= count * fpp:
        raise CorruptDataError(f"the index says {frames} frames in {count} packets", offset)
    if header.segment_length:
        # One segment per packet: counted first, so the frames are summed over few segments.
        segments = -(-index.length // header.segment_stride)
        if segments != count:
            raise CorruptDataError(
                f"the index length {index.length} makes {segments} segments, not {count}", offset
            )
    if header.frames_for(index.length) != frames:
        raise CorruptDataError(
            f"the index length {index.length} does not make its {frames} frames", offset
        )
    if header.length is not None and header.length != index.length:
        raise CorruptDataError(
            f"the header says {header.length} samples, the index {index.length}", offset
        )
    original = header.original_length
    if original is not None and index.original_length not in (None, original):
        raise CorruptDataError(
            f"the header says {original} original samples, the index {index.original_length}",
            offset,
        )
    # The header's pair was checked on reading; an original length known only here must
    # agree with the length in the same way.
    if (
        original is None
        and index.original_length is not None
        and not lengths_agree(
            index.length, header.sample_rate, index.original_length, header.original_sample_rate
        )
    ):
        raise CorruptDataError(
            f"the index's original length {index.original_length} does not match its "
            f"length {index.length}",
            offset,
        )
