"""Bounds-checked big-endian reading for the container's parsers.

Every read names what it reads and fails with a :class:`~audiotok.errors.FormatError`
carrying the absolute byte offset, so a damaged file is reported as "truncated in the
packet's payload size (at byte 1234)" instead of an ``IndexError``.
"""

from __future__ import annotations

import struct
import zlib

from ...errors import CorruptDataError, TruncatedError

NO_LENGTH = 2**64 - 1
"""A length field's value when the length is not known (a stream still being written)."""


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 (ISO-HDLC, zlib's), which detects every error burst of up to 32 bits."""
    return zlib.crc32(data) & 0xFFFFFFFF


class Reader:
    """Reads big-endian fields from a byte buffer, tracking the absolute offset.

    Args:
        data: The bytes.
        base: Absolute file offset of ``data[0]``, for error messages.
    """

    def __init__(self, data: bytes | memoryview, base: int = 0) -> None:
        self.data = memoryview(data)
        self.base = base
        self.pos = 0

    @property
    def offset(self) -> int:
        """Absolute file offset of the next byte."""
        return self.base + self.pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        """The next ``size`` bytes, or :class:`TruncatedError` naming ``what``."""
        if size < 0 or size > self.remaining:
            raise TruncatedError(
                f"data ends in {what} ({size} bytes needed, {self.remaining} left)", self.offset
            )
        out = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        """Fields of struct format ``fmt`` (big-endian is prepended)."""
        layout = struct.Struct(">" + fmt)
        return layout.unpack(self.take(layout.size, what))

    def u8(self, what: str) -> int:
        return self.unpack("B", what)[0]

    def u16(self, what: str) -> int:
        return self.unpack("H", what)[0]

    def u32(self, what: str) -> int:
        return self.unpack("I", what)[0]

    def u64(self, what: str) -> int:
        return self.unpack("Q", what)[0]

    def text(self, size: int, what: str) -> str:
        """``size`` bytes of UTF-8."""
        at = self.offset
        raw = self.take(size, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptDataError(f"{what} is not valid UTF-8", at) from None


def check_range(value: int, low: int, high: int, what: str, offset: int) -> int:
    """``value`` if ``low <= value <= high``, else :class:`CorruptDataError`."""
    if not low <= value <= high:
        raise CorruptDataError(f"{what} {value} is outside [{low}, {high}]", offset)
    return value
