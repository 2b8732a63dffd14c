"""Dataset tokenization on Ray with 1 and 2 workers, against the local engine, in one run.

The corpus is the repository's two clips copied ``--copies`` times each (the 24 kHz speech and
the 48 kHz stereo music, a few seconds each), encoded with the packaged ``audiotok_24khz`` at
6 kbps into a fresh dataset per run: locally (one process, ``--threads`` torch threads), then
on a local Ray (started by the script for each run, timed apart) with 1 and with 2
``EncodeFiles`` actors of one thread each. Each run is checked to give the same tokens as the
first Ray run. Reported: seconds of audio encoded per second of wall time (actor start-up
included, Ray's own start-up not), and the ratio of 2 workers to 1.

Then the service as a Ray Serve application (``audiotok.serve.ray_app``) with 1 and with 2
replicas of one CPU each on the same local Ray, on a shared state folder: ``--clients``
threads each send ``--requests`` ``POST /v1/compress`` of the 2.65 s speech clip through
Serve's proxy on loopback; throughput and latency percentiles, and the ratio of 2 replicas
to 1. Every request must succeed.

Usage::

    python benchmarks/scale_bench.py [--copies 40] [--threads 1] [--clients 8] [--requests 8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


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


def bench_replicas(replicas: int, state: Path, clients: int, requests: int) -> float:
    """Compress requests through Ray Serve with ``replicas`` replicas; requests per second."""
    import socket

    import httpx
    import soundfile as sf
    from ray import serve
    from serve_bench import SPEECH, load, row

    from audiotok.serve.ray_app import application

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        application({"replicas": replicas, "state": str(state)}), name="audiotok", route_prefix="/"
    )
    speech, errors = SPEECH.read_bytes(), []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:

        def compress(i: int) -> float:
            start = time.perf_counter()
            r = client.post(
                "/v1/compress", files={"audio": ("s.flac", speech)}, data={"bitrate": "6"}
            )
            if r.status_code != 200:
                errors.append(r.text)
            return time.perf_counter() - start

        compress(0)  # the first request warms the proxy and a replica up
        latencies, wall = load(clients, requests, compress)
    serve.shutdown()
    if errors:
        sys.exit(f"{len(errors)} errors, e.g. {errors[0]}")
    seconds = len(latencies) * sf.info(SPEECH).duration
    print(row(f"POST /v1/compress, {replicas} replica(s)", latencies, wall, "s audio/s", seconds))
    return len(latencies) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=40, help="copies of each clip")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local run")
    parser.add_argument("--clients", type=int, default=8, help="service clients")
    parser.add_argument("--requests", type=int, default=8, help="requests per service client")
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
        print(f"\n2 workers / 1 worker: {ratio:.2f}x the throughput\n")

        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        print("| route | requests | requests/s | throughput | p50 ms | p95 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        rates = {
            n: bench_replicas(n, tmp_path / f"state-{n}", args.clients, args.requests)
            for n in (1, 2)
        }
        ray.shutdown()
        print(f"\n2 replicas / 1 replica: {rates[2] / rates[1]:.2f}x the throughput")


if __name__ == "__main__":
    main()
