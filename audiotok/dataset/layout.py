"""A token dataset on disk: ``dataset.json``, the shards, ``index.jsonl``, and reading them.

The normative description is ``docs/DATASETS.md``. A dataset holds the tokens of one model
(by its weights' fingerprint) at one bandwidth and precision; its index has one JSON line per
file, written only once the file's shard is on disk.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, BinaryIO

from .. import __version__
from ..codec.base import Codec
from ..errors import AudiotokError

FORMAT = "audiotok.dataset"
VERSION = 1
INFO_NAME = "dataset.json"
INDEX_NAME = "index.jsonl"
SHARD_NAME = "shard-{:05d}.safetensors"
SHARD_PATTERN = re.compile(r"shard-(\d{5,})\.safetensors")
DEFAULT_SHARD_BYTES = 256_000_000
DEFAULT_BATCH_SECONDS = 60.0
RECORD_FIELDS = ("path", "shard", "frame_offset", "num_frames", "length", "sample_rate",
                 "source_sample_rate", "source_channels", "scale_offset", "num_scales")  # fmt: skip
IDENTITY = ("model_id", "fingerprint", "bandwidth", "precision")
# Datasets written before precision was recorded were made in float32.
IDENTITY_DEFAULTS = {"precision": "fp32"}


class DatasetError(AudiotokError, ValueError):
    """A dataset directory or manifest that can't be used: another model, damage, bad TSV."""


def dataset_info(codec: Codec, bandwidth: float) -> dict[str, Any]:
    """The content of ``dataset.json`` for ``codec`` at ``bandwidth`` kbps."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_id": codec.model_id,
        "fingerprint": codec.fingerprint().hex(),
        "bandwidth": bandwidth,
        "precision": getattr(codec, "precision", "fp32"),
        "num_codebooks": codec.num_codebooks(bandwidth),
        "cardinality": codec.cardinality,
        "codes_dtype": "int16" if codec.cardinality <= 32768 else "int32",
        "sample_rate": codec.sample_rate,
        "channels": codec.channels,
        "frame_rate": codec.frame_rate,
        "hop_length": codec.hop_length,
        "has_scales": codec.has_scales,
        "audiotok_version": __version__,
    }


def read_info(path: Path) -> dict[str, Any]:
    """``dataset.json``, checked to be ours and of a version this audiotok reads."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable dataset description ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DatasetError(f"{path}: not an audiotok dataset description")
    if int(info.get("version", 0)) > VERSION:
        raise DatasetError(
            f"{path}: dataset version {info['version']} is newer than this audiotok reads "
            f"({VERSION}); upgrade audiotok"
        )
    return info


def read_index(file: BinaryIO, path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of ``index.jsonl``, without a last line cut short by a crash.

    With ``repair``, such a line is also cut off the file, so that appending starts cleanly.
    """
    file.seek(0)
    records, offset = [], 0
    for number, line in enumerate(file, start=1):
        if not line.endswith(b"\n"):
            if repair:
                file.truncate(offset)
            break
        offset += len(line)
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not set(RECORD_FIELDS) <= record.keys():
            raise DatasetError(f"{path}:{number}: not an index record")
        records.append(record)
    return records
