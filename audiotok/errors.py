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
