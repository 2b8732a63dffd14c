"""Writing a token dataset: shards of encoded files, then their index lines, under a lock.

A run appends to ``index.jsonl`` only once the shard its files are in is on disk (written
atomically, then the directory synced), so a crash loses at most the files of one shard,
and a rerun resumes by skipping the files the index names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..audio.read import to_numpy
from ..codec.tokens import Tokens
from ..runtime.files import atomic_path
from .layout import (
    FORMAT,
    IDENTITY,
    IDENTITY_DEFAULTS,
    INDEX_NAME,
    INFO_NAME,
    SHARD_NAME,
    SHARD_PATTERN,
    VERSION,
    DatasetError,
    read_index,
    read_info,
)

try:
    import fcntl
except ImportError:  # Windows has no flock; two runs into one directory are then not caught
    fcntl = None


class ShardWriter:
    """Collects encoded files and writes them as shards, then appends their index lines."""

    def __init__(
        self, out_dir: Path, index: BinaryIO, number: int, shard_bytes: int, info: dict[str, Any]
    ) -> None:
        """Writes ``shard-{number:05d}.safetensors`` and on into ``out_dir``, lines to ``index``."""
        self.out_dir = out_dir
        self.index = index
        self.number = number
        self.shard_bytes = shard_bytes
        self.seconds = 0.0  # of audio added, for the progress bar
        self.dtype = np.dtype(info["codes_dtype"])
        self.has_scales = bool(info["has_scales"])
        keys = (*IDENTITY, "num_codebooks", "cardinality", "sample_rate", "frame_rate")
        self.metadata = {"format": f"{FORMAT}.shard", "version": str(VERSION)}
        self.metadata.update({k: str(info[k]) for k in keys})
        self._clear()

    def _clear(self) -> None:
        self.codes: list[np.ndarray] = []  # [K, F] each
        self.scales: list[np.ndarray] = []  # [S] each
        self.records: list[dict[str, Any]] = []
        self.frames = self.num_scales = self.nbytes = 0

    def add(self, record: dict[str, Any], tokens: Tokens) -> list[dict[str, Any]]:
        """Buffers one file's tokens (``B == 1``), filling in ``record``'s shard fields.

        Returns:
            The records of the shard this closed (those files are now done), or ``[]``.
        """
        # numpy: the tokens of either backend, and no torch needed to write them.
        codes = to_numpy(tokens.codes[0]).astype(self.dtype)
        scales = np.zeros(0, np.float32)
        if tokens.scales is not None:
            scales = to_numpy(tokens.scales[0]).astype(np.float32)
        nbytes = codes.nbytes + scales.nbytes
        # Close before overflowing, so that only a file larger than a shard makes one larger.
        closed = self.flush() if self.records and self.nbytes + nbytes > self.shard_bytes else []
        record.update(shard=SHARD_NAME.format(self.number), frame_offset=self.frames)
        record.update(
            num_frames=codes.shape[1], scale_offset=self.num_scales, num_scales=scales.size
        )
        self.codes.append(codes)
        self.scales.append(scales)
        self.records.append(record)
        self.frames += codes.shape[1]
        self.num_scales += scales.size
        self.nbytes += nbytes
        self.seconds += tokens.duration
        return closed

    def flush(self) -> list[dict[str, Any]]:
        """Writes the open shard (if any) durably, then its index lines; returns its records."""
        if not self.records:
            return []
        self._write_shard()
        # Only now, with the shard on disk, do its files count as done. The buffer is emptied
        # first: an interrupt inside the append (Ctrl-C during its fsync, the lines written)
        # must not leave them for the run's last flush to write again.
        records = self.records
        self._clear()
        self._append_index(records)
        return records

    def _write_shard(self) -> None:
        from safetensors.numpy import save

        tensors = {"codes": np.ascontiguousarray(np.concatenate(self.codes, axis=1))}
        if self.has_scales:
            tensors["scales"] = np.concatenate(self.scales).astype(np.float32)
        metadata = {**self.metadata, "num_files": str(len(self.records))}
        name = SHARD_NAME.format(self.number)
        with atomic_path(self.out_dir / name, False, DatasetError) as tmp:
            # Bytes into the prepared file: it keeps the umask's mode (save_file: 0600), so
            # that a dataset one user makes, another (a training job) can read.
            tmp.write_bytes(save(tensors, metadata=metadata))
            _fsync(tmp)
        _fsync(self.out_dir)  # the rename itself must survive a crash before the index names it
        self.number += 1  # used up, even if appending the index fails

    def _append_index(self, records: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self.index.write(lines.encode("utf-8"))
        self.index.flush()
        os.fsync(self.index.fileno())


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories can't be opened on Windows; there renames are durable
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def open_for_writing(out_dir: Path, info: dict[str, Any]) -> Iterator[tuple[BinaryIO, set, int]]:
    """The locked index (for appending), the paths it names, and the next shard number."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path, info_path = out_dir / INDEX_NAME, out_dir / INFO_NAME
    shards = [int(m[1]) for p in out_dir.iterdir() if (m := SHARD_PATTERN.fullmatch(p.name))]
    if not info_path.exists() and (shards or (index_path.exists() and index_path.stat().st_size)):
        raise DatasetError(f"{out_dir}: holds shards or an index but no {INFO_NAME}")
    with open(index_path, "a+b") as index:
        if fcntl is not None:
            try:
                fcntl.flock(index.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DatasetError(f"{out_dir}: another run is writing to it") from None
        if info_path.exists():
            _check_identity(out_dir, read_info(info_path), info)
        else:
            with atomic_path(info_path, False, DatasetError) as tmp:
                tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        done = {record["path"] for record in read_index(index, index_path, repair=True)}
        yield index, done, max(shards, default=-1) + 1


def _check_identity(out_dir: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    found = {**IDENTITY_DEFAULTS, **found}
    if any(found.get(k) != wanted[k] for k in IDENTITY):
        old, new = (f"{i.get('model_id')} (fingerprint {str(i.get('fingerprint'))[:12]}) at "
                    f"{i.get('bandwidth')} kbps in {i.get('precision')}"
                    for i in (found, wanted))  # fmt: skip
        raise DatasetError(
            f"{out_dir}: holds tokens of {old}, this run makes {new}; "
            "resume with the same model, bandwidth and precision, or write to another directory"
        )
