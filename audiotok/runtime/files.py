"""Atomic output files: written under a temporary name beside the target, then moved in place.

Nothing half written is ever seen under the target's name, and an existing file is replaced
only when asked: without ``overwrite`` the temporary file is hard-linked into place, which
fails if the target appeared in the meantime (a rename would silently replace it).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import AudiotokError, E


def not_a_file(path: str | os.PathLike) -> str:
    """Why ``path`` can't be read as a file, for the message ``f"{path}: {why}"``: missing, or
    what it is instead (a directory or FIFO said to be missing sent users looking for a typo).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return err.strerror or "cannot be read"
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return f"not a regular file ({what})"
    return "not a regular file"


def exists_error(target: str | os.PathLike, error: type[E]) -> E:
    """The error for an existing ``target``: names ``overwrite=True``, or on the CLI ``--force``."""
    message = f"{target}: already exists; pass overwrite=True to replace it"
    return error(message).for_cli(f"{target}: already exists; use -f/--force to replace it")


def check_target(target: Path, overwrite: bool, error: type[AudiotokError]) -> None:
    """Raises ``error`` if ``target`` can't be written: exists, is a directory, no parent."""
    if target.is_dir():
        raise error(f"{target}: is a directory")
    if target.exists() and not overwrite:
        raise exists_error(target, error)
    if not target.parent.is_dir():
        raise error(f"{target}: directory {target.parent} does not exist")


def temp_stem(name: str) -> str:
    """``name`` cut to 200 bytes (whole characters), for a temporary file beside it: a name
    near the file system's 255-byte limit still leaves room for a prefix and a suffix."""
    return name.encode()[:200].decode(errors="ignore")


@contextmanager
def atomic_path(
    target: str | os.PathLike, overwrite: bool = False, error: type[AudiotokError] = AudiotokError
) -> Iterator[Path]:
    """A fresh temporary path beside ``target``, moved to ``target`` when the block succeeds.

    Args:
        target: The final path.
        overwrite: Whether an existing file may be replaced.
        error: The error type to raise when the target can't be written.
    """
    target = Path(target)
    check_target(target, overwrite, error)
    while True:  # O_EXCL, mode 0o666: the file gets the permissions the umask gives
        tmp = target.with_name(f".{temp_stem(target.name)}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise exists_error(target, error) from None
        except OSError:  # a file system without hard links
            if target.exists():
                raise exists_error(target, error) from None
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(
    target: str | os.PathLike, overwrite: bool = False, error: type[AudiotokError] = AudiotokError
) -> Iterator[BinaryIO]:
    """:func:`atomic_path`, opened for binary writing."""
    with atomic_path(target, overwrite, error) as tmp, open(tmp, "wb") as f:
        yield f


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
