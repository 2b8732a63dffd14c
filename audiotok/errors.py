"""The exceptions audiotok raises on bad input.

Every error a user can cause (a missing file, unreadable audio, a checkpoint of the wrong
architecture, weights that are not available offline) is an :class:`AudiotokError`, whose
message is one self-contained line. The CLI prints that line and exits with status 1;
anything else escaping is a bug.
"""

from __future__ import annotations


class AudiotokError(Exception):
    """Base class of all errors caused by the user's input or environment."""


class AudioError(AudiotokError, ValueError):
    """Audio that can't be read or used: missing, unreadable, empty, NaN, bad shape."""


class CheckpointError(AudiotokError, ValueError):
    """A checkpoint that can't be loaded: unknown format, wrong architecture, damaged."""


class ModelNotAvailableError(AudiotokError, FileNotFoundError):
    """The weights of a known model are neither cached locally nor downloadable."""


class TokensError(AudiotokError, ValueError):
    """Tokens that don't fit the codec, or a tokens file that can't be read."""


class DeviceError(AudiotokError, ValueError):
    """A torch device that does not exist or is not available on this machine."""


class FormatError(AudiotokError, ValueError):
    """A damaged, truncated or unsupported compressed file.

    This is the one error type that reading a file raises, whatever the damage.

    Attributes:
        offset: The byte offset in the file where the problem was found, or None.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.message = message
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte {offset})")


class TruncatedError(FormatError):
    """The data ends before a structure that it announces."""


class ChecksumError(FormatError):
    """A CRC does not match: the bytes were changed."""


class UnsupportedFormatError(FormatError):
    """Not a file of ours, or a version or feature this audiotok does not read."""


class CorruptDataError(FormatError):
    """Structurally valid bytes that don't decode: inconsistent sizes, a bad payload."""
