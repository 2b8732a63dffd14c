"""Token datasets: a corpus of audio files encoded into safetensors shards and an index.

A dataset directory (normative description: ``docs/DATASETS.md``) holds ``dataset.json`` (model,
fingerprint, bandwidth, K, cardinality), ``shard-00000.safetensors``, ... (codes int16 or int32
``[K, total_frames]``, scales float32 ``[total_scales]``) and ``index.jsonl`` (one JSON object
per file: path -> shard, frame_offset, num_frames, ...).

:func:`tokenize_dataset` writes one. Files are encoded ``batch_size`` at a time with
:meth:`Codec.encode_batch`, each with the codes it would get alone, while background threads
read the next files; shards are written
atomically, and a file's index line only once its shard is on disk, so a rerun resumes by
skipping the files the index names. :class:`TokenDataset` reads it back, memory-mapped.

Example:
    >>> report = tokenize_dataset(codec, sorted(Path("corpus").rglob("*.flac")), "tokens")
    >>> TokenDataset("tokens")[0].codes.shape          # doctest: +SKIP
    torch.Size([1, 8, 750])
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..codec.base import Codec
from ..runtime.console import stderr_is_terminal
from .captions import with_caption
from .inputs import Encoded, Source, batches, encode_files, read_ahead
from .layout import (
    DEFAULT_BATCH_SECONDS,
    DEFAULT_SHARD_BYTES,
    RECORD_FIELDS,
    DatasetError,
    dataset_info,
)
from .shards import ShardWriter, open_for_writing


@dataclass
class DatasetReport:
    """What :func:`tokenize_dataset` did.

    Attributes:
        out_dir: The dataset directory.
        encoded: Files encoded and indexed by this run.
        skipped: Files already in the index (done by an earlier run), or named twice.
        failures: ``(path, one-line message)`` of every file that could not be encoded.
        shards: Names of the shards this run wrote.
        audio_seconds: Seconds of audio (at the model's rate) this run indexed.
        elapsed: Wall-clock seconds of the run.
    """

    out_dir: Path
    encoded: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed: float = 0.0


def read_manifest(path: str | os.PathLike) -> list[Source]:
    """The files a TSV manifest lists (header with a ``path`` column; paths relative to it).

    Columns other than ``path`` are kept as strings for the index, except those named like an
    index field (e.g. ``sample_rate``): the index's own, measured value wins.

    Raises:
        DatasetError: The file is missing, has no ``path`` column, or a row of the wrong width.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM is not part of "path"
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DatasetError(f"{path}: cannot read manifest: {reason}") from None
    if not rows or "path" not in rows[0]:
        raise DatasetError(f"{path}: a manifest is a TSV file whose header has a 'path' column")
    header, sources = rows[0], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header) or not row[header.index("path")]:
            raise DatasetError(f"{path}:{line}: expected {len(header)} fields and a path")
        values = dict(zip(header, row, strict=True))
        name = values.pop("path")
        extra = {k: v for k, v in values.items() if k not in RECORD_FIELDS}
        sources.append(Source(name, path.parent / name, extra))
    return sources


def tokenize_dataset(
    codec: Codec,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    bandwidth: float | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    manifest: str | os.PathLike | None = None,
    progress: bool = True,
    batch_seconds: float = DEFAULT_BATCH_SECONDS,
    read_workers: int = 2,
    batch_size: int = 1,
    engine: Engine | None = None,
) -> DatasetReport:
    """Encodes audio files into a dataset directory, or adds the missing ones to it.

    Args:
        codec: The model; every file gets the codes ``codec.encode`` gives it alone.
        inputs: Audio files (for a directory: ``sorted(Path(d).rglob("*.flac"))``); the index
            names each by ``os.fspath`` of what is given here.
        out_dir: The dataset directory, created if missing, resumed if it holds a dataset.
        bandwidth: kbps; None for the codec's default. Must match a resumed dataset's.
        shard_bytes: A shard is closed before its tensors would exceed this many bytes.
        manifest: A TSV manifest (see :func:`read_manifest`) listing more files.
        progress: Report on stderr: a progress bar if it is a terminal, else a line per
            file; and a line for each failing file.
        batch_seconds: Seconds of decoded audio to keep read ahead of the model (0: none).
        read_workers: Threads reading audio.
        batch_size: Files per forward pass (:meth:`Codec.encode_batch`; for segmented models,
            segments per pass). Batches pay off on a GPU; on a few CPU cores hardly.
        engine: Where files are read and encoded: None here, in this process;
            :class:`~audiotok.dataset.ray_engine.RayEngine` on a Ray cluster. Either way this
            process writes the shards and the index, in the order of ``inputs``, so the
            dataset is the same.

    Returns:
        A report; files that failed are in ``failures`` and absent from the index.

    Raises:
        DatasetError: ``out_dir`` holds another model's or bandwidth's tokens, is damaged, or
            another run is writing to it; a bad manifest.
        AudioError: An unsupported bandwidth.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    start = time.monotonic()
    info = dataset_info(codec, codec.check_bandwidth(bandwidth))
    sources = [Source(os.fspath(p), Path(p), {}) for p in inputs]
    sources += read_manifest(manifest) if manifest is not None else []
    named = len(sources)
    sources = _one_per_file(sources)
    # Captions (a manifest's description column, else a .json / .txt sidecar) go to the index.
    sources = [s._replace(extra=with_caption(s.file, s.extra)) for s in sources]
    report = DatasetReport(Path(out_dir))
    with open_for_writing(report.out_dir, info) as (index, done, first_shard):
        todo = []
        for source in sources:
            if source.key not in done:
                done.add(source.key)
                todo.append(source)
        report.skipped = named - len(todo)
        writer = ShardWriter(report.out_dir, index, first_shard, shard_bytes, info)
        bar = tqdm(
            total=len(todo),
            unit="file",
            file=sys.stderr,
            disable=not (progress and stderr_is_terminal()),
        )
        lines = progress and bar.disable  # in a log, a line per file instead of a bar
        if engine is None:
            encoded = local_encoded(
                codec, todo, info["bandwidth"], batch_seconds, read_workers, batch_size
            )
        else:
            encoded = engine.encoded(codec, todo, info["bandwidth"], batch_size)
        try:
            with contextlib.closing(encoded):  # stops readers or workers at once on an error
                for done_file in encoded:
                    source, tokens = done_file.source, done_file.tokens
                    if tokens is None:  # the file's fault: report it, go on
                        _fail(report, source, done_file.error, bar, progress)
                    else:
                        record = dict.fromkeys(RECORD_FIELDS)
                        record.update(
                            path=source.key, length=tokens.length, sample_rate=tokens.sample_rate
                        )
                        record.update(
                            source_sample_rate=done_file.rate,
                            source_channels=done_file.channels,
                            **source.extra,
                        )
                        _count(report, writer.add(record, tokens))
                        bar.set_postfix_str(f"{writer.seconds / 3600:.3f} h audio", refresh=False)
                        if lines:
                            seconds = tokens.length / tokens.sample_rate
                            bar.write(f"{source.file}: {seconds:.2f} s encoded", file=sys.stderr)
                    bar.update()
        except BaseException:
            # Keep what is encoded, whatever stopped the run (Ctrl-C, a bug, CUDA out of
            # memory): only the batch in hand is lost. The first error is the one to see.
            with contextlib.suppress(Exception):
                _count(report, writer.flush())
            raise
        finally:
            bar.close()
        _count(report, writer.flush())
    report.elapsed = time.monotonic() - start
    return report


def _one_per_file(sources: list[Source]) -> list[Source]:
    """One source per file, under its first name, with the columns of all its names.

    A path given and the same file in the manifest (relative to its folder) are two names of
    one file: it is encoded once, and the manifest's columns (its ``description`` above all,
    which must win over a sidecar's) are kept whichever name came first; where two names
    give a column, the first wins.
    """
    first: dict[Path, int] = {}
    out: list[Source] = []
    for source in sources:
        file = source.file.resolve()
        if file not in first:
            first[file] = len(out)
            out.append(source)
        else:
            kept = out[first[file]]
            out[first[file]] = kept._replace(extra={**source.extra, **kept.extra})
    return out


class Engine(Protocol):
    """Reads and encodes a dataset's files somewhere: ``encoded`` yields them in order."""

    def encoded(
        self, codec: Codec, todo: list[Source], bandwidth: float, batch_size: int
    ) -> Generator[Encoded, None, None]: ...


def local_encoded(
    codec: Codec,
    todo: list[Source],
    bandwidth: float,
    batch_seconds: float,
    read_workers: int,
    batch_size: int,
) -> Generator[Encoded, None, None]:
    """The files encoded in this process, in order, read ahead by ``read_workers`` threads."""
    reads = read_ahead(todo, batch_seconds, read_workers)
    try:
        for batch in batches(reads, batch_size):
            yield from encode_files(codec, batch, bandwidth)
    finally:
        reads.close()  # stops the reader threads now, not when garbage-collected


def _fail(report: DatasetReport, source: Source, message: str, bar: Any, progress: bool) -> None:
    if not message.startswith(str(source.file)):
        message = f"{source.file}: {message}"
    report.failures.append((source.key, message))
    if progress:
        bar.write(f"audiotok: error: {message}", file=sys.stderr)


def _count(report: DatasetReport, records: list[dict[str, Any]]) -> None:
    if records:
        report.encoded += len(records)
        report.audio_seconds += sum(r["length"] / r["sample_rate"] for r in records)
        report.shards.append(records[0]["shard"])
