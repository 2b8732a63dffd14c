"""The exceptions audiotok raises on bad input.

Every error a user can cause (a missing file, unreadable audio, a checkpoint of the wrong
architecture, weights that are not available offline) is an :class:`AudiotokError`, whose
message is one self-contained line. The CLI prints that line and exits with status 1;
anything else escaping is a bug.

A message that tells the user what to do names the Python argument (``overwrite=True``); the
command line's flag (``-f/--force``) is in :attr:`AudiotokError.cli_message`, which the CLI
prints instead, so that neither says both.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound="AudiotokError")
F = TypeVar("F", bound="FormatError")


class AudiotokError(Exception):
    """Base class of all errors caused by the user's input or environment.

    Attributes:
        cli_message: The message in the command line's words (its flags instead of Python's
            arguments), where they differ; None when ``str(error)`` says it for both.
        http_message: The same in the service's words (its request parameters), or None.
    """

    cli_message: str | None = None
    http_message: str | None = None

    def for_cli(self: E, message: str) -> E:
        """Sets :attr:`cli_message`; returns the error, for ``raise Error(...).for_cli(...)``."""
        self.cli_message = message
        return self


class AudioError(AudiotokError, ValueError):
    """Audio that can't be read or used: missing, unreadable, empty, NaN, bad shape."""


class CheckpointError(AudiotokError, ValueError):
    """A checkpoint that can't be loaded: unknown format, wrong architecture, damaged."""


class ModelNotAvailableError(AudiotokError, FileNotFoundError):
    """The weights of a known model are neither cached locally nor downloadable."""


class TokensError(AudiotokError, ValueError):
    """Tokens that don't fit the codec, or a tokens file that can't be read."""


class TokensTooLargeError(TokensError):
    """A tokens file whose codes are beyond the limits its reader was given."""


class DeviceError(AudiotokError, ValueError):
    """A torch device that does not exist or is not available on this machine."""


class FormatError(AudiotokError, ValueError):
    """A damaged, truncated or unsupported compressed file.

    This is the one error type that reading a file raises, whatever the damage.

    Attributes:
        message: What is wrong (with the file's name, once :meth:`in_file` has added it).
        offset: The byte offset in the file where the problem was found, or None.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.message = message
        self.offset = offset
        self._hints: tuple[str, str, str] | None = None
        super().__init__(self._render(0))

    def _render(self, which: int) -> str:
        """The message, the offset, and the hint for Python (``which`` 0), the CLI (1) or the
        service (2: HTTP and gRPC)."""
        text = self.message if self.offset is None else f"{self.message} (at byte {self.offset})"
        return text if self._hints is None else f"{text}; {self._hints[which]}"

    def _update(self) -> None:
        self.args = (self._render(0),)
        if self._hints is not None:
            self.cli_message, self.http_message = self._render(1), self._render(2)

    def in_file(self: F, name: str | None) -> F:
        """Names the file in the message (once; not when ``name`` is None); returns the error."""
        if name and not self.message.startswith(f"{name}: "):
            self.message = f"{name}: {self.message}"
            self._update()
        return self

    def with_hint(self: F, python: str, cli: str, http: str) -> F:
        """Adds what to do about it, in Python's, the CLI's and the service's words; returns
        the error."""
        self._hints = (python, cli, http)
        self._update()
        return self


class TruncatedError(FormatError):
    """The data ends before a structure that it announces."""


class ChecksumError(FormatError):
    """A CRC does not match: the bytes were changed."""


class UnsupportedFormatError(FormatError):
    """Not a file of ours, or a version or feature this audiotok does not read."""


class CorruptDataError(FormatError):
    """Structurally valid bytes that don't decode: inconsistent sizes, a bad payload."""


# What to do about a damaged or truncated file, in the words of Python, of the command line and
# of the service (/v1/decompress's query parameter, gRPC Decompress's field).
DAMAGE_HINT = (
    "recover=True conceals the damage",
    "--recover conceals the damage",
    "recover=true conceals the damage",
)
TRUNCATED_HINT = (
    "recover=True decodes what is there",
    "--recover decodes what is there",
    "recover=true decodes what is there",
)


def first_line(exc: BaseException) -> str:
    """The first line of a library's error message, or its type's name when it has none:
    the reason our one-line errors quote."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def hint_damage(exc: FormatError) -> FormatError:
    """Adds to a damage error how to decode anyway (not to a format this reader can't read)."""
    if not isinstance(exc, UnsupportedFormatError):
        exc.with_hint(*DAMAGE_HINT)
    return exc
