"""The command line's side of the ``encodec`` package's ``.ecdc`` files: written from audio or
tokens, read into tokens and the codec that decodes them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .common import fail, load
from .summaries import summary


def compress_ecdc(codec: Any, wav: Any, rate: int, bandwidth: float | None, entropy: str,
                  target: Path | str, force: bool, suffix: str) -> str:  # fmt: skip
    """Audio ``[C, T]`` coded in one pass into the ``.ecdc`` file ``target``; its summary."""
    if suffix != ".ecdc":
        fail("--entropy lm writes the encodec package's .ecdc format: name an .ecdc output")
    tokens = codec.encode(wav, sample_rate=rate, bandwidth=bandwidth)
    return write_ecdc_file(codec, tokens, entropy, target, force)


def write_ecdc_file(codec: Any, tokens: Any, entropy: str, target: Path | str, force: bool) -> str:
    """``tokens`` written as the ``.ecdc`` file ``target`` (``-``: standard output), atomically,
    arithmetic-coded by the model's LM if ``entropy`` is ``lm``; its summary line."""
    from ..compression.container.ecdc import write_ecdc

    lm = None
    if entropy == "lm":  # torch's (bit-packed files need no torch)
        from ..compression.container.ecdc_lm import load_ecdc_lm

        lm = load_ecdc_lm(codec.model_id)
    data = write_ecdc(tokens, codec.model_id, lm=lm)
    if target == "-":
        sys.stdout.buffer.write(data)
    else:
        from ..runtime.files import atomic_output

        with atomic_output(target, force) as file:
            file.write(data)
    return summary(target, tokens)


def read_ecdc_file(data: bytes, codec: Any, device: str, backend: str,
                   source: Path | str) -> tuple[Any, Any]:  # fmt: skip
    """The tokens of an ``.ecdc`` file and the codec that decodes them (``codec``, or the one
    the file names)."""
    from ..compression.container.ecdc import read_ecdc
    from ..errors import FormatError

    try:
        tokens = read_ecdc(data, framework="np")  # the codec takes either kind
    except FormatError as exc:  # read from bytes, which have no name to give
        exc.in_file(None if source == "-" else str(source))
        raise
    return tokens, codec or load(tokens.model_id, None, device, backend)
