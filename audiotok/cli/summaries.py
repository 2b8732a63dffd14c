"""The line each command prints on stderr for a file it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def streamed_summary(target: Path) -> str:
    """The line of an ``.atok`` file written as a stream (its length read from its index)."""
    from ..compression.container.reader import AtokReader

    with AtokReader(target) as reader:
        header, index = reader.header, reader.index()
    seconds = (index.length if index else 0) / header.sample_rate
    kbps = target.stat().st_size * 8 / max(seconds, 1e-9) / 1000
    return (
        f"{target}: {seconds:.2f} s, {header.num_codebooks} codebooks at "
        f"{header.bandwidth:g} kbps, {kbps:.2f} kbps (streamed)"
    )


def summary(target: Path | str, tokens: Any) -> str:
    """The line of a compressed file (or ``-``, standard output) written from ``tokens``."""
    size = (
        ""
        if target == "-"
        else f", {Path(target).stat().st_size * 8 / tokens.duration / 1000:.2f} kbps"
    )
    return (
        f"{target}: {tokens.duration:.2f} s, {tokens.num_codebooks} codebooks at "
        f"{tokens.bandwidth:g} kbps{size}"
    )


def written_summary(target: Path | str) -> str:
    """The summary line of an audio file written as a stream (read back from the file)."""
    import soundfile as sf

    info = sf.info(str(target))
    return f"{target}: {info.duration:.2f} s, {info.samplerate} Hz, {info.channels} ch"
