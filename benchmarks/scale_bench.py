"""Dataset tokenization on Ray with 1 and 2 workers, against the local engine, in one run.

The corpus is the repository's two clips copied ``--copies`` times each (the 24 kHz speech and
the 48 kHz stereo music, a few seconds each), encoded with the packaged ``audiotok_24khz`` at
6 kbps into a fresh dataset per run: locally (one process, ``--threads`` torch threads), then
on a local Ray (started by the script for each run, timed apart) with 1 and with 2
``EncodeFiles`` actors of one thread each. Each run is checked to give the same tokens as the
first Ray run. Reported: seconds of audio encoded per second of wall time (actor start-up
included, Ray's own start-up not), and the ratio of 2 workers to 1.

Not measured yet: the Ray Serve side of the issue (service throughput with 1 and 2 replicas).

Usage::

    python benchmarks/scale_bench.py [--copies 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def corpus(directory: Path, copies: int) -> list[Path]:
    clips = sorted((ROOT / "tests" / "data").glob("*.flac"))
    files = []
    for i in range(copies):
        for clip in clips:
            files.append(directory / f"{i:04d}_{clip.name}")
            shutil.copy(clip, files[-1])
    return files


def run(codec, files: list[Path], out: Path, engine) -> tuple[float, float]:
    """(wall seconds, audio seconds) of one tokenization into a new ``out``."""
    from audiotok.dataset.tokenize import tokenize_dataset

    start = time.perf_counter()
    report = tokenize_dataset(codec, files, out, bandwidth=6.0, progress=False, engine=engine)
    wall = time.perf_counter() - start
    if report.failures or report.encoded != len(files):
        sys.exit(f"{out}: {len(report.failures)} failures, {report.encoded} of {len(files)}")
    return wall, report.audio_seconds


def same_tokens(a: Path, b: Path) -> bool:
    from audiotok.dataset.reader import TokenDataset

    da, db = TokenDataset(a), TokenDataset(b)
    return da.paths() == db.paths() and all(da[i].codes.equal(db[i].codes) for i in range(len(da)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=40, help="copies of each clip")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local run")
    args = parser.parse_args()

    import ray
    import torch

    import audiotok
    from audiotok.dataset.ray_engine import RayEngine

    torch.set_num_threads(args.threads)
    codec = audiotok.load_codec("audiotok_24khz")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "corpus").mkdir()
        files = corpus(tmp_path / "corpus", args.copies)
        rows = {}
        for name, engine in (
            ("ray, 1 worker", RayEngine(num_workers=1)),
            ("ray, 2 workers", RayEngine(num_workers=2)),
            (f"local, {args.threads} thread(s)", None),
        ):
            out = tmp_path / name.replace(" ", "_").replace(",", "")
            started = time.perf_counter()
            if engine is not None:  # started apart, to report the work without Ray's start-up
                ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            startup = time.perf_counter() - started
            wall, audio = run(codec, files, out, engine)
            if engine is not None:
                ray.shutdown()
            rows[name] = (wall, audio, out, startup)
        first = rows["ray, 1 worker"][2]
        print(
            f"{len(files)} files, {rows['ray, 1 worker'][1]:.0f} s of audio, audiotok_24khz "
            "at 6 kbps\n"
        )
        print("| engine | start-up s | wall s | audio s / s | same tokens as ray, 1 worker |")
        print("|---|---|---|---|---|")
        for name, (wall, audio, out, startup) in rows.items():
            same = same_tokens(first, out)
            print(f"| {name} | {startup:.1f} | {wall:.1f} | {audio / wall:.1f} | {same} |")
        ratio = rows["ray, 1 worker"][0] / rows["ray, 2 workers"][0]
        print(f"\n2 workers / 1 worker: {ratio:.2f}x the throughput")


if __name__ == "__main__":
    main()
