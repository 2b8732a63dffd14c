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
import json
import operator
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from . import __version__
from .codec.base import Codec
from .codec.tokens import Tokens
from .console import stderr_is_terminal
from .dataset_inputs import Source, batches, encode_files, read_ahead
from .errors import AudiotokError
from .fileio import atomic_path

try:
    import fcntl
except ImportError:  # Windows has no flock; two runs into one directory are then not caught
    fcntl = None

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
_IDENTITY_DEFAULTS = {"precision": "fp32"}


class DatasetError(AudiotokError, ValueError):
    """A dataset directory or manifest that can't be used: another model, damage, bad TSV."""


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
    report = DatasetReport(Path(out_dir))
    with _open_for_writing(report.out_dir, info) as (index, done, first_shard):
        todo = []
        for source in sources:
            if source.key not in done:
                done.add(source.key)
                todo.append(source)
        report.skipped = len(sources) - len(todo)
        writer = ShardWriter(report.out_dir, index, first_shard, shard_bytes, info)
        bar = tqdm(total=len(todo), unit="file", file=sys.stderr,
                   disable=not (progress and stderr_is_terminal()))  # fmt: skip
        lines = progress and bar.disable  # in a log, a line per file instead of a bar
        reads = read_ahead(todo, batch_seconds, read_workers)
        try:
            for batch in batches(reads, batch_size):
                for done_file in encode_files(codec, batch, info["bandwidth"]):
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
            reads.close()  # stops the reader threads now, not when garbage-collected
            bar.close()
        _count(report, writer.flush())
    report.elapsed = time.monotonic() - start
    return report


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
        self.dtype = getattr(torch, info["codes_dtype"])
        self.has_scales = bool(info["has_scales"])
        keys = (*IDENTITY, "num_codebooks", "cardinality", "sample_rate", "frame_rate")
        self.metadata = {"format": f"{FORMAT}.shard", "version": str(VERSION)}
        self.metadata.update({k: str(info[k]) for k in keys})
        self._clear()

    def _clear(self) -> None:
        self.codes: list[torch.Tensor] = []  # [K, F] each
        self.scales: list[torch.Tensor] = []  # [S] each
        self.records: list[dict[str, Any]] = []
        self.frames = self.num_scales = self.nbytes = 0

    def add(self, record: dict[str, Any], tokens: Tokens) -> list[dict[str, Any]]:
        """Buffers one file's tokens (``B == 1``), filling in ``record``'s shard fields.

        Returns:
            The records of the shard this closed (those files are now done), or ``[]``.
        """
        codes = tokens.codes[0].to("cpu", self.dtype)
        scales = tokens.scales[0].cpu() if tokens.scales is not None else torch.zeros(0)
        nbytes = codes.numel() * codes.element_size() + scales.numel() * 4
        # Close before overflowing, so that only a file larger than a shard makes one larger.
        closed = self.flush() if self.records and self.nbytes + nbytes > self.shard_bytes else []
        record.update(shard=SHARD_NAME.format(self.number), frame_offset=self.frames)
        record.update(
            num_frames=codes.shape[1], scale_offset=self.num_scales, num_scales=scales.numel()
        )
        self.codes.append(codes)
        self.scales.append(scales)
        self.records.append(record)
        self.frames += codes.shape[1]
        self.num_scales += scales.numel()
        self.nbytes += nbytes
        self.seconds += tokens.duration
        return closed

    def flush(self) -> list[dict[str, Any]]:
        """Writes the open shard (if any) durably, then its index lines; returns its records."""
        if not self.records:
            return []
        self._write_shard()
        # Only now, with the shard on disk, do its files count as done.
        self._append_index(self.records)
        records = self.records
        self._clear()
        return records

    def _write_shard(self) -> None:
        from safetensors.torch import save_file

        tensors = {"codes": torch.cat(self.codes, dim=1).contiguous()}
        if self.has_scales:
            tensors["scales"] = torch.cat(self.scales).float().contiguous()
        metadata = {**self.metadata, "num_files": str(len(self.records))}
        name = SHARD_NAME.format(self.number)
        with atomic_path(self.out_dir / name, False, DatasetError) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
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
def _open_for_writing(out_dir: Path, info: dict[str, Any]) -> Iterator[tuple[BinaryIO, set, int]]:
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
        done = {record["path"] for record in _read_index(index, index_path, repair=True)}
        yield index, done, max(shards, default=-1) + 1


def _check_identity(out_dir: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    found = {**_IDENTITY_DEFAULTS, **found}
    if any(found.get(k) != wanted[k] for k in IDENTITY):
        old, new = (f"{i.get('model_id')} (fingerprint {str(i.get('fingerprint'))[:12]}) at "
                    f"{i.get('bandwidth')} kbps in {i.get('precision')}"
                    for i in (found, wanted))  # fmt: skip
        raise DatasetError(
            f"{out_dir}: holds tokens of {old}, this run makes {new}; "
            "resume with the same model, bandwidth and precision, or write to another directory"
        )


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


def _read_index(file: BinaryIO, path: Path, repair: bool = False) -> list[dict[str, Any]]:
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


class TokenDataset:
    """A dataset directory read back: ``ds[i]`` is the :class:`Tokens` of the ``i``-th file.

    Shards are memory-mapped (``safetensors.safe_open``) and only the frames of the file asked
    for are read. Files are in index order: the order they were encoded in.

    Example:
        >>> ds = TokenDataset("tokens")                                   # doctest: +SKIP
        >>> tokens = ds[0]                          # codes int64 [1, K, F], scales [1, S] | None
        >>> ds.paths()[0], ds.record(0)["shard"]
        ('corpus/a.flac', 'shard-00000.safetensors')
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.info = read_info(self.root / INFO_NAME)
        with open(self.root / INDEX_NAME, "rb") as index:
            self._records = _read_index(index, self.root / INDEX_NAME)
        for record in self._records:
            if not SHARD_PATTERN.fullmatch(str(record["shard"])):
                raise DatasetError(f"{self.root / INDEX_NAME}: bad shard name {record['shard']!r}")
        self._shards: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._records)

    def paths(self) -> list[str]:
        """The files' paths as the index names them, in order."""
        return [record["path"] for record in self._records]

    def record(self, i: int) -> dict[str, Any]:
        """The index record of file ``i`` (a copy)."""
        return dict(self._records[operator.index(i)])

    def __getitem__(self, i: int) -> Tokens:
        """Tokens of file ``i``: codes int64 ``[1, K, F]``, scales float32 ``[1, S]`` or None."""
        record = self._records[operator.index(i)]
        shard = self._shard(record["shard"])
        start = record["frame_offset"]
        codes = shard.get_slice("codes")[:, start : start + record["num_frames"]]
        scales = None
        if self.info["has_scales"]:
            first = record["scale_offset"]
            scales = shard.get_slice("scales")[first : first + record["num_scales"]][None]
        info = self.info
        return Tokens(codes[None].long(), scales, record["length"], record["sample_rate"],
                      float(info["bandwidth"]), info["model_id"])  # fmt: skip

    def __iter__(self) -> Iterator[Tokens]:
        return (self[i] for i in range(len(self)))

    def _shard(self, name: str) -> Any:
        if name not in self._shards:
            from safetensors import safe_open

            path = self.root / name
            if not path.is_file():
                raise DatasetError(f"{path}: shard missing")
            self._shards[name] = safe_open(str(path), framework="pt")
        return self._shards[name]

    def __getstate__(self) -> dict[str, Any]:
        # Open shards don't cross process boundaries (DataLoader workers); each reopens them.
        return {**self.__dict__, "_shards": {}}
