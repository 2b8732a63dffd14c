"""The ``.atok`` header: everything needed to decode the packets that follow.

Layout (big-endian; docs/FORMAT.md is the normative description)::

    magic "ATOK" | major u8 | minor u8 | header_size u32 |
    model_id (u8 n, n bytes UTF-8) | weights fingerprint (16 bytes) |
    sample_rate u32 | channels u8 | frame_rate num u32 | frame_rate den u32 |
    cardinality u32 | num_codebooks u8 | bandwidth_bps u32 | length u64 |
    original_sample_rate u32 | original_channels u8 | original_length u64 |
    segment_length u32 | segment_stride u32 | frames_per_packet u32 | scales_per_packet u8 |
    coder_id u8 | coder_params (u16 n, n bytes) |
    metadata (u16 count, then per entry: u16 n key UTF-8, u32 m value UTF-8) |
    [extension bytes of later minor versions] | CRC-32 u32 of all bytes before it
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction

from ...errors import ChecksumError, CorruptDataError, UnsupportedFormatError
from .binary import NO_LENGTH, Reader, check_range, crc32

MAGIC = b"ATOK"
MAJOR = 1
MINOR = 0
PREFIX_SIZE = 10  # magic, major, minor, header_size
MAX_HEADER_SIZE = 1 << 24
MAX_RATE = 1_000_000
MAX_FRAMES_PER_PACKET = 1 << 16
FINGERPRINT_SIZE = 16


def lengths_agree(length: int, rate: int, original_length: int, original_rate: int) -> bool:
    """Whether ``length`` samples at ``rate`` are ``original_length`` at ``original_rate`` to
    within one sample at ``rate`` (resampling rounds the length)."""
    return abs(length * original_rate - original_length * rate) <= original_rate


@dataclass
class Header:
    """The decoded header of an ``.atok`` file.

    Attributes:
        model_id: Registry name (or other id) of the codec that made the tokens.
        fingerprint: First 16 bytes of the SHA-256 of the codec's weights (zeros if unknown).
        sample_rate: The codec's sample rate.
        channels: The codec's channels.
        frame_rate: Frames per second, exactly (``Fraction``).
        cardinality: Entries per codebook.
        num_codebooks: Codebooks ``K`` coded in every packet.
        bandwidth_bps: The bandwidth the tokens were made at, in bits per second.
        length: Samples per channel at ``sample_rate``, or None if unknown.
        original_sample_rate: Rate of the audio given to ``compress``.
        original_channels: Channels of that audio.
        original_length: Its length in samples, or None if unknown.
        segment_length: Segment length in samples for segmented codecs, else 0.
        segment_stride: Distance between segment starts, else 0.
        frames_per_packet: Frames in every packet but the last.
        scales_per_packet: 1 when each packet carries a segment's loudness scale, else 0.
        coder_id: The entropy coder (0 raw bit packing, 1 adaptive rANS).
        coder_params: The coder's parameters, as it serialises them.
        metadata: User key/value pairs, like Vorbis comments (keys unique, case kept).
        minor: The minor version the file was written with.
    """

    model_id: str
    fingerprint: bytes
    sample_rate: int
    channels: int
    frame_rate: Fraction
    cardinality: int
    num_codebooks: int
    bandwidth_bps: int
    length: int | None
    original_sample_rate: int
    original_channels: int
    original_length: int | None
    segment_length: int
    segment_stride: int
    frames_per_packet: int
    scales_per_packet: int
    coder_id: int
    coder_params: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)
    minor: int = MINOR

    @property
    def bandwidth(self) -> float:
        """kbps."""
        return self.bandwidth_bps / 1000

    @property
    def hop_length(self) -> Fraction:
        """Samples per frame."""
        return self.sample_rate / self.frame_rate

    def num_frames(self) -> int | None:
        """Total frames, when the length is known: as the codec lays them out."""
        return None if self.length is None else self.frames_for(self.length)

    def frames_for(self, length: int) -> int:
        """Frames of a signal of ``length`` samples, as the codec lays them out."""
        if self.segment_length == 0:
            return int(-(-length // self.hop_length))
        return sum(self.segment_frames(length))

    def segment_frames(self, length: int) -> list[int]:
        """Frames of each segment of a signal of ``length`` samples (segmented codecs)."""
        hop, seg, stride = self.hop_length, self.segment_length, self.segment_stride
        return [int(-(-min(seg, length - start) // hop)) for start in range(0, length, stride)]

    def to_bytes(self) -> bytes:
        """The header's bytes, CRC included."""
        model = self.model_id.encode("utf-8")
        if not 1 <= len(model) <= 255:
            raise ValueError("model_id must be 1 to 255 bytes of UTF-8")
        if len(self.fingerprint) != FINGERPRINT_SIZE:
            raise ValueError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
        body = bytearray()
        body += struct.pack(">B", len(model)) + model + self.fingerprint
        body += struct.pack(
            ">IBIIIBIQIBQIIIBB",
            self.sample_rate,
            self.channels,
            self.frame_rate.numerator,
            self.frame_rate.denominator,
            self.cardinality,
            self.num_codebooks,
            self.bandwidth_bps,
            NO_LENGTH if self.length is None else self.length,
            self.original_sample_rate,
            self.original_channels,
            NO_LENGTH if self.original_length is None else self.original_length,
            self.segment_length,
            self.segment_stride,
            self.frames_per_packet,
            self.scales_per_packet,
            self.coder_id,
        )
        body += struct.pack(">H", len(self.coder_params)) + self.coder_params
        body += struct.pack(">H", len(self.metadata))
        for key, value in self.metadata.items():
            k, v = key.encode("utf-8"), value.encode("utf-8")
            if not 1 <= len(k) <= 255:
                raise ValueError(f"metadata key {key!r} must be 1 to 255 bytes of UTF-8")
            body += struct.pack(">H", len(k)) + k + struct.pack(">I", len(v)) + v
        size = PREFIX_SIZE + len(body) + 4
        if size > MAX_HEADER_SIZE:
            raise ValueError(f"header of {size} bytes exceeds {MAX_HEADER_SIZE}")
        head = MAGIC + struct.pack(">BBI", MAJOR, MINOR, size) + bytes(body)
        return head + struct.pack(">I", crc32(head))

    @classmethod
    def read_size(cls, prefix: bytes) -> int:
        """The header's total size from its first 10 bytes, checking magic and version.

        Raises:
            UnsupportedFormatError: Not an ``.atok`` file, or a newer major version.
            TruncatedError, CorruptDataError: A short or impossible prefix.
        """
        r = Reader(prefix)
        if r.take(4, "the magic") != MAGIC:
            raise UnsupportedFormatError("not an .atok file (no ATOK magic)", 0)
        major, _minor = r.u8("the major version"), r.u8("the minor version")
        if major != MAJOR:
            raise UnsupportedFormatError(
                f".atok major version {major} is not readable by this audiotok (reads {MAJOR})", 4
            )
        return check_range(r.u32("the header size"), PREFIX_SIZE + 4, MAX_HEADER_SIZE,
                           "header size", 6)  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """Parses and verifies a whole header (``read_size`` bytes).

        Raises:
            FormatError: With the offset of the first bad field.
        """
        size = cls.read_size(data[:PREFIX_SIZE])
        r = Reader(data[:size])
        r.take(size - 4, "the header")
        (stored,) = r.unpack("I", "the header CRC")
        if crc32(data[: size - 4]) != stored:
            raise ChecksumError("header CRC mismatch: the header is damaged", size - 4)
        r = Reader(data[: size - 4])
        r.take(5, "the prefix")
        minor = r.u8("the minor version")
        r.take(4, "the header size")
        model_id = r.text(check_range(r.u8("the model id size"), 1, 255, "model id size",
                                      r.offset - 1), "the model id")  # fmt: skip
        fingerprint = r.take(FINGERPRINT_SIZE, "the weights fingerprint")
        at = r.offset
        (sample_rate, channels, fr_num, fr_den, cardinality, num_codebooks, bandwidth_bps, length,
         original_rate, original_channels, original_length, segment_length, segment_stride,
         frames_per_packet, scales_per_packet, coder_id) = r.unpack(
            "IBIIIBIQIBQIIIBB", "the stream parameters"
        )  # fmt: skip
        check_range(sample_rate, 1, MAX_RATE, "sample rate", at)
        check_range(channels, 1, 255, "channels", at + 4)
        check_range(fr_num, 1, MAX_RATE, "frame rate numerator", at + 5)
        check_range(fr_den, 1, MAX_RATE, "frame rate denominator", at + 9)
        if cardinality < 2 or cardinality > 1 << 16 or cardinality & (cardinality - 1):
            raise CorruptDataError(f"cardinality {cardinality} is not a power of two", at + 13)
        check_range(num_codebooks, 1, 255, "codebooks", at + 17)
        check_range(original_rate, 1, MAX_RATE, "original sample rate", at + 30)
        check_range(original_channels, 1, 255, "original channels", at + 34)
        check_range(frames_per_packet, 1, MAX_FRAMES_PER_PACKET, "frames per packet", at + 51)
        check_range(scales_per_packet, 0, 1, "scales per packet", at + 55)
        if segment_length:
            check_range(segment_stride, 1, segment_length, "segment stride", at + 47)
        elif segment_stride:
            raise CorruptDataError("segment stride without a segment length", at + 47)
        # Decoders size their output from these: lengths that contradict each other (a 3 s
        # stream said to be 24 h once converted back) are a damaged or forged header.
        if NO_LENGTH not in (length, original_length) and not lengths_agree(
            length, sample_rate, original_length, original_rate
        ):
            raise CorruptDataError(
                f"original length {original_length} at {original_rate} Hz does not match "
                f"the length {length} at {sample_rate} Hz",
                at + 35,
            )
        params = r.take(r.u16("the coder parameters size"), "the coder parameters")
        metadata: dict[str, str] = {}
        for _ in range(r.u16("the metadata count")):
            key_at = r.offset
            key = r.text(r.u16("a metadata key size"), "a metadata key")
            if not key or key in metadata:
                raise CorruptDataError(f"empty or repeated metadata key {key!r}", key_at)
            metadata[key] = r.text(r.u32("a metadata value size"), "a metadata value")
        # Bytes left before the CRC are extensions of a later minor version: skipped.
        return cls(
            model_id=model_id,
            fingerprint=fingerprint,
            sample_rate=sample_rate,
            channels=channels,
            frame_rate=Fraction(fr_num, fr_den),
            cardinality=cardinality,
            num_codebooks=num_codebooks,
            bandwidth_bps=bandwidth_bps,
            length=None if length == NO_LENGTH else length,
            original_sample_rate=original_rate,
            original_channels=original_channels,
            original_length=None if original_length == NO_LENGTH else original_length,
            segment_length=segment_length,
            segment_stride=segment_stride,
            frames_per_packet=frames_per_packet,
            scales_per_packet=scales_per_packet,
            coder_id=coder_id,
            coder_params=params,
            metadata=metadata,
            minor=minor,
        )
