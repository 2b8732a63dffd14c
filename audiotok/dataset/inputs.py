"""Feeding a token dataset: audio files read ahead in threads, then encoded in batches.

:func:`audiotok.dataset.tokenize.tokenize_dataset` takes files from :func:`read_ahead` (background
reads, bounded by seconds of audio held), groups them with :func:`batches` (the next group's
reads run while one is encoded) and encodes each group with :func:`encode_files`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from ..audio.read import read_audio
from ..codec.base import Codec
from ..codec.tokens import Tokens
from ..errors import AudiotokError


class Source(NamedTuple):
    """One file to encode: its index key, where it is, and the manifest's other columns."""

    key: str
    file: Path
    extra: dict[str, str]


def batches(
    reads: Iterable[tuple[Source, Future]], size: int
) -> Iterator[list[tuple[Source, Future]]]:
    """Groups of ``size`` consecutive reads (the last may be smaller), one group ahead.

    The next group is taken from ``reads`` before this one is handed out, so that its files
    are being read while this one is encoded.
    """
    it = iter(reads)
    current = list(itertools.islice(it, size))
    while current:
        following = list(itertools.islice(it, size))
        yield current
        current = following


class Encoded(NamedTuple):
    """One file's outcome: its tokens and source format, or why it failed."""

    source: Source
    error: str | None
    tokens: Tokens | None = None
    rate: int = 0
    channels: int = 0


def encode_files(
    codec: Codec, batch: list[tuple[Source, Future]], bandwidth: float
) -> list[Encoded]:
    """Encodes the files of ``batch`` in one :meth:`Codec.encode_batch`; in order."""
    read: list[tuple[Source, Any, int] | Encoded] = []
    for source, future in batch:
        try:
            read.append((source, *future.result()))
        except AudiotokError as exc:
            read.append(Encoded(source, str(exc)))
    good = [r for r in read if not isinstance(r, Encoded)]
    try:
        wavs, rates = [w for _, w, _ in good], [r for _, _, r in good]
        # max_batch = the files' count: batch size 1 runs each segment alone, as encode does.
        tokens = iter(codec.encode_batch(wavs, rates, bandwidth, max_batch=len(batch)))
    except AudiotokError:
        tokens = None  # a file the model refuses: find it by encoding one by one
    out = []
    for r in read:
        if isinstance(r, Encoded):
            out.append(r)
            continue
        source, wav, rate = r
        try:
            t = next(tokens) if tokens is not None else codec.encode(wav, rate, bandwidth)
        except AudiotokError as exc:
            out.append(Encoded(source, str(exc)))
        else:
            out.append(Encoded(source, None, t, rate, wav.shape[0]))
    return out


def read_ahead(
    sources: list[Source], seconds: float, workers: int
) -> Generator[tuple[Source, Future], None, None]:
    """``(source, future of read_audio)`` in order, reading ahead in background threads.

    New reads start while fewer than ``workers`` are running and the audio read but not yet
    taken is shorter than ``seconds``, which bounds the memory held to about that much audio.
    """
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="audiotok-read")
    queue: deque[tuple[Source, Future]] = deque()
    pending = iter(sources)
    finished = False
    try:
        while True:
            while not queue or _may_read_more(queue, seconds, workers):
                source = next(pending, None)
                if source is None:
                    break
                queue.append((source, pool.submit(read_audio, source.file)))
            if not queue:
                finished = True
                return
            yield queue.popleft()
    finally:
        # Reads handed out are still wanted after the last one (the batch being encoded);
        # only a run stopped early (close) drops those not started.
        pool.shutdown(wait=True, cancel_futures=not finished)


def _may_read_more(queue: deque[tuple[Source, Future]], seconds: float, workers: int) -> bool:
    running = sum(not future.done() for _, future in queue)
    ready = [f.result() for _, f in queue if f.done() and f.exception() is None]
    return running < workers and sum(w.shape[-1] / r for w, r in ready) < seconds
