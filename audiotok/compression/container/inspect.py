"""``describe``: what ``audiotok info`` prints about a compressed file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import FormatError
from .reader import AtokReader


def describe(
    path: str | os.PathLike, priors_for: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """A JSON-serialisable description of an ``.atok`` or ``.ecdc`` file.

    Every packet of an ``.atok`` file is read, CRC-checked and entropy-decoded, so
    ``problems`` lists any damage or truncation.

    Args:
        path: The file.
        priors_for: Model id -> its static entropy-coder priors ``[K, n]`` (or None), for
            streams coded with a model card's priors.

    Raises:
        FormatError: The header itself is unreadable.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"ECDC":
        from .ecdc import read_ecdc_header

        header = read_ecdc_header(path.read_bytes())
        return {"file": str(path), "format": "ecdc (encodec package, version 0)", "bytes": size,
                **{k: v for k, v in vars(header).items()}}  # fmt: skip
    with AtokReader(path) as reader:
        h = reader.header
        if priors_for is not None:
            reader.priors = priors_for(h.model_id)
        packets = frames = 0
        problems = []
        # The report names the file once; its problems need not each repeat it.
        prefix = f"{reader.name}: "
        try:
            for offset, packet in reader.packets(recover=True):
                try:
                    reader.decode(packet, offset)
                except FormatError as exc:
                    problems.append(str(exc).removeprefix(prefix))
                packets += 1
                frames += packet.num_frames
        except FormatError as exc:
            problems.append(str(exc).removeprefix(prefix))
        problems += [f"{d.reason} (at byte {d.offset})" for d in reader.damage]
        if reader.truncated_at is not None:
            problems.append(
                f"truncated: the data after byte {reader.truncated_at} is incomplete or missing"
            )
        if reader.trailing_at is not None:
            problems.append(f"data after the end of the stream (at byte {reader.trailing_at})")
        index = reader.stream_index
    length = h.length if h.length is not None else (index.length if index else None)
    seconds = None if length is None else length / h.sample_rate
    return {
        "file": str(path),
        "format": f"atok {1}.{h.minor}",
        "bytes": size,
        "model": h.model_id,
        "weights_fingerprint": h.fingerprint.hex(),
        "sample_rate": h.sample_rate,
        "channels": h.channels,
        "frame_rate": float(h.frame_rate),
        "codebooks": h.num_codebooks,
        "cardinality": h.cardinality,
        "bandwidth_kbps": h.bandwidth,
        "entropy_coder": {0: "raw", 1: "adaptive"}.get(h.coder_id, f"#{h.coder_id}"),
        "seconds": seconds,
        "actual_kbps": None if not seconds else round(size * 8 / seconds / 1000, 3),
        "original": {
            "sample_rate": h.original_sample_rate,
            "channels": h.original_channels,
            "length": h.original_length
            if h.original_length is not None
            else (index.original_length if index else None),
        },
        "packets": packets,
        "frames": frames,
        "seek_index": index is not None,
        "metadata": h.metadata,
        "problems": problems,
    }
