"""``.atok`` packets: self-contained groups of frames, each with its own CRC.

Layout (big-endian)::

    sync "ATpk" | sequence u32 | first_frame u32 | num_frames u32 |
    scales (scales_per_packet x float32) | payload_size u32 | payload | CRC-32 u32

The CRC covers every byte from the sync word to the end of the payload, so every single-byte
change inside a packet is detected. The payload is the entropy coder's output for the packet's
codes ``[K, num_frames]``; the coder starts afresh in every packet, so a packet decodes alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...errors import ChecksumError, CorruptDataError
from .binary import Reader, crc32
from .entropy import EntropyCoder
from .header import Header

SYNC = b"ATpk"
FIXED_SIZE = 16  # sync, sequence, first frame, frame count


@dataclass
class Packet:
    """One packet.

    Attributes:
        sequence: 0 for the first packet, then 1, 2, ... without gaps.
        first_frame: Index of the packet's first frame in the stream.
        num_frames: Frames in the packet.
        scales: Loudness scales of the segments the packet holds (``scales_per_packet``).
        payload: The entropy-coded codes.
    """

    sequence: int
    first_frame: int
    num_frames: int
    scales: tuple[float, ...]
    payload: bytes

    def to_bytes(self) -> bytes:
        """The packet's bytes, CRC included."""
        body = SYNC + struct.pack(">III", self.sequence, self.first_frame, self.num_frames)
        body += b"".join(struct.pack(">f", s) for s in self.scales)
        body += struct.pack(">I", len(self.payload)) + self.payload
        return body + struct.pack(">I", crc32(body))

    @staticmethod
    def fixed_size(header: Header) -> int:
        """Bytes before the payload."""
        return FIXED_SIZE + 4 * header.scales_per_packet + 4

    @classmethod
    def parse_prefix(
        cls, data: bytes, header: Header, offset: int, coder: EntropyCoder
    ) -> tuple[int, int, int, int]:
        """Checks the bytes before a payload; returns sequence, first frame, frames, payload size.

        Args:
            data: At least :meth:`fixed_size` bytes starting at the sync word.
            header: The stream's header, which bounds every field.
            offset: Absolute offset of ``data[0]``, for errors.
            coder: The stream's entropy coder, which bounds the payload size: anything larger
                than it can produce is damage, and refusing it bounds what a reader allocates.
        """
        r = Reader(data[: cls.fixed_size(header)], offset)
        if r.take(4, "a packet sync word") != SYNC:
            raise CorruptDataError("damaged: no packet sync word (ATpk) where one is due", offset)
        sequence, first_frame, num_frames = r.unpack("III", "a packet's numbers")
        if not 1 <= num_frames <= header.frames_per_packet:
            raise CorruptDataError(f"packet of {num_frames} frames", offset + 12)
        if first_frame != sequence * header.frames_per_packet:
            raise CorruptDataError(
                f"packet {sequence} starts at frame {first_frame}, not "
                f"{sequence * header.frames_per_packet}",
                offset + 8,
            )
        r.take(4 * header.scales_per_packet, "a packet's scales")
        size = r.u32("a packet's payload size")
        if size > coder.max_payload_size(num_frames):
            raise CorruptDataError(
                f"packet payload of {size} bytes is impossibly large", r.offset - 4
            )
        return sequence, first_frame, num_frames, size

    @classmethod
    def from_bytes(cls, data: bytes, header: Header, offset: int, coder: EntropyCoder) -> Packet:
        """Parses and verifies one whole packet (``data`` may extend past it).

        Raises:
            FormatError: Truncated, inconsistent or damaged (CRC mismatch), with the offset.
        """
        sequence, first_frame, num_frames, size = cls.parse_prefix(data, header, offset, coder)
        fixed = cls.fixed_size(header)
        r = Reader(data, offset)
        r.take(fixed, "a packet header")
        payload = r.take(size, "a packet payload")
        (stored,) = r.unpack("I", "a packet CRC")
        if crc32(memoryview(data)[: fixed + size]) != stored:
            raise ChecksumError(f"packet {sequence} is damaged (CRC mismatch)", offset)
        scales = struct.unpack(
            f">{header.scales_per_packet}f", data[16 : 16 + 4 * header.scales_per_packet]
        )
        if not all(np.isfinite(s) and s > 0 for s in scales):
            raise CorruptDataError(f"packet {sequence} has a non-positive scale", offset + 16)
        return cls(sequence, first_frame, num_frames, tuple(scales), payload)

    def size(self) -> int:
        """Bytes of the packet on disk."""
        return FIXED_SIZE + 4 * len(self.scales) + 4 + len(self.payload) + 4
