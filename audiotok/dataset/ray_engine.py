"""Tokenizing a dataset on Ray Data: files read and encoded by actors across a cluster.

:class:`RayEngine` is an engine for :func:`~audiotok.dataset.tokenize.tokenize_dataset`: a
Ray Dataset of the files to do goes through ``map_batches`` with a pool of
:class:`EncodeFiles` actors, each holding the codec (on a GPU with ``device="cuda"``), and
comes back to the driver in input order (``preserve_order``), which writes the shards and the
index exactly as the local run does. The tokens are the same too: each actor runs the same
:func:`~audiotok.dataset.inputs.encode_files` on the same files (with the same torch thread
count: a different count rounds floats differently, which can tip a near-tie between two
codebook entries, as ``benchmarks/exactness_bench.py`` counts for streaming).

Faults: an actor that dies (its process or node killed) is restarted and its batch run again
(Ray Data's actor pools default to ``max_restarts=-1`` and ``max_task_retries=-1``); the
driver writes only what comes back, once, so no shard is lost or written twice. If the
driver dies, rerunning the command resumes from the index, as the local path does.

    >>> report = tokenize_dataset(codec, files, "tokens", engine=RayEngine(num_workers=4))
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.read import read_audio, to_numpy
from ..codec.base import Codec
from ..codec.tokens import Tokens
from ..errors import AudiotokError
from .inputs import Encoded, Source, encode_files


def _read(path: str) -> Future:
    """``read_audio`` of ``path`` as a finished future (what ``encode_files`` takes)."""
    future: Future = Future()
    try:
        future.set_result(read_audio(path))
    except AudiotokError as exc:
        future.set_exception(exc)
    return future


class EncodeFiles:
    """A Ray Data actor: the codec, loaded once, encoding batches of files.

    A batch is ``{"index": [n], "file": [n]}``; the answer has per file its ``index``, an
    ``error`` ("" if none), ``codes`` ``[K, F]``, ``scales`` ``[S]`` (empty if none), the
    signal's ``length``, and the source file's ``rate`` and ``channels``.
    """

    def __init__(self, codec: Codec, bandwidth: float, device: str, threads: int) -> None:
        torch = sys.modules.get("torch")  # loaded by a torch codec; none for the onnx backend
        if torch is not None:
            torch.set_num_threads(max(1, threads))
        self.codec = codec.to(device) if device != "cpu" else codec
        self.bandwidth = bandwidth

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        files = [str(f) for f in batch["file"]]
        reads = [(Source(f, Path(f), {}), _read(f)) for f in files]
        out: dict[str, list[Any]] = {
            k: [] for k in ("index", "error", "codes", "scales", "length", "rate", "channels")
        }
        for index, done in zip(
            batch["index"], encode_files(self.codec, reads, self.bandwidth), strict=True
        ):
            tokens = done.tokens
            out["index"].append(int(index))
            out["error"].append(done.error or "")
            out["codes"].append(to_numpy(tokens.codes[0]) if tokens else np.zeros((0, 0), np.int64))
            scales = (
                to_numpy(tokens.scales[0])
                if tokens and tokens.scales is not None
                else np.zeros(0, np.float32)
            )
            out["scales"].append(scales.astype(np.float32))
            out["length"].append(tokens.length if tokens else 0)
            out["rate"].append(done.rate)
            out["channels"].append(done.channels)
        return out


@dataclass
class RayEngine:
    """Encodes a dataset's files on Ray.

    Attributes:
        address: The cluster (``ray://HOST:10001``, ``HOST:6379`` or ``auto``); None starts a
            local Ray for the run, unless this process is already connected to one.
        num_workers: Encoding actors (each holds the codec).
        device: ``cpu``, or ``cuda`` for actors with one GPU each.
        threads: Torch threads (and Ray CPUs) per actor.
    """

    address: str | None = None
    num_workers: int = 2
    device: str = "cpu"
    threads: int = 1

    def encoded(
        self, codec: Codec, todo: list[Source], bandwidth: float, batch_size: int
    ) -> Generator[Encoded, None, None]:
        """The files of ``todo`` encoded on Ray, in order (see :class:`Engine`)."""
        # Ray Data's usage collection starts, at a run's first execution, a daemon thread that
        # queries a Prometheus at localhost:9090 every 10 s for the rest of the process's life,
        # logging each failed query with its traceback: in a process that tokenizes offline and
        # goes on to other work, four tracebacks formatted in the background every 10 s
        # (whose formatting, on CPython 3.11, parses source with ``ast`` beside the main
        # thread: a SystemError "AST constructor recursion depth mismatch" in our CI).
        # setdefault: a caller's own setting wins.
        os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
        import ray

        owned = not ray.is_initialized()
        if owned:
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
            )
        try:
            if todo:
                yield from self._run(ray, codec, todo, bandwidth, batch_size)
        finally:
            if owned:
                ray.shutdown()

    def _run(
        self, ray: Any, codec: Codec, todo: list[Source], bandwidth: float, batch_size: int
    ) -> Generator[Encoded, None, None]:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the index in input order, as local
        # Absolute: workers resolve paths in their own working directory, not the caller's.
        items = [
            {"index": i, "file": os.path.abspath(source.file)} for i, source in enumerate(todo)
        ]
        gpus = 1 if self.device.startswith("cuda") else 0
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // batch_size))
        dataset = dataset.map_batches(
            EncodeFiles,
            fn_constructor_kwargs={
                # A copy: Codec.to moves in place, and the caller's codec stays where it is.
                "codec": copy.deepcopy(codec).to("cpu") if gpus else codec,
                "bandwidth": bandwidth,
                "device": self.device,
                "threads": self.threads,
            },
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=self.num_workers,
            num_cpus=self.threads,
            num_gpus=gpus,
        )
        for row in _rows(ray, dataset):
            source = todo[int(row["index"])]
            if row["error"]:
                yield Encoded(source, str(row["error"]))
                continue
            scales = np.asarray(row["scales"], np.float32)
            tokens = Tokens(
                np.array(row["codes"], np.int64)[None],
                scales[None] if codec.has_scales else None,
                int(row["length"]),
                codec.sample_rate,
                bandwidth,
                codec.model_id,
            )
            yield Encoded(source, None, tokens, int(row["rate"]), int(row["channels"]))


def _rows(ray: Any, dataset: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows; an error raised in a worker comes out as itself (a CUDA
    out-of-memory as the ``RuntimeError`` a local run raises), not wrapped in Ray's
    ``RayTaskError``, so that callers catch the same exceptions on either engine."""
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayTaskError as exc:
        cause = exc
        while isinstance(cause, ray.exceptions.RayTaskError | ray.exceptions.UserCodeException):
            inner = getattr(cause, "cause", None) or cause.__cause__
            if inner is None:
                break
            cause = inner
        if cause is exc:
            raise
        raise cause from None
