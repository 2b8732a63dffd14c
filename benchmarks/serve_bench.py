"""Bounded load on ``audiotok serve`` over loopback: throughput and latency per route.

A server process (the packaged default codec and a random-weight MusicGen) is started on a
free loopback port; ``--clients`` threads then send a fixed number of requests each:

* ``compress``: ``POST /v1/compress`` of the repository's 2.65 s speech clip at 6 kbps, then
  ``POST /v1/decompress`` of the result (each its own row);
* ``generate``: ``POST /v1/generate`` of a ``--duration`` clip (distinct prompts, cache off),
  then polling ``GET /v1/jobs/{id}`` until done: the latency is the job's, end to end.

Generation runs twice, on a server batching up to ``--max-batch`` jobs per LM pass and on one
that does not (``--max-batch 1``), and the batched throughput is printed as a ratio of the
unbatched one, measured in the same run. Every request must succeed: the script exits 1 on any
error. Nothing leaves the machine; counts and a time limit bound the load.

Usage::

    python benchmarks/serve_bench.py [--clients 8] [--requests 8] [--gen-requests 4]
        [--duration 10] [--size tiny|small] [--device cpu|cuda] [--max-batch 8]

``--size small`` gives the generator musicgen-small's shape (24 layers of width 1024, T5-base
text encoder) with random weights, for accelerator runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SPEECH = ROOT / "tests" / "data" / "speech_24k.flac"


def random_generator(directory: Path, size: str) -> Path:
    """A random-weight MusicGen in transformers' format: the tests' tiny one, or small's shape."""
    from generate_reference import save_hf, tiny_musicgen

    if size == "tiny":
        return save_hf(tiny_musicgen(seed=11), directory)
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    t5 = T5Config(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    codec = EncodecConfig(
        sampling_rate=32_000,
        audio_channels=1,
        num_filters=64,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=2048,
        target_bandwidths=[2.2],
        use_causal_conv=False,
        pad_mode="constant",
        use_conv_shortcut=False,
        num_lstm_layers=2,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=2048,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        ffn_dim=4096,
        num_codebooks=4,
        pad_token_id=2048,
        bos_token_id=2048,
    )
    model = MusicgenForConditionalGeneration(
        MusicgenConfig(text_encoder=t5, audio_encoder=codec, decoder=decoder)
    )
    from generate_reference import tiny_tokenizer

    model.save_pretrained(directory)
    tiny_tokenizer(32_100).save_pretrained(directory)
    return directory


def percentiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return q[49], q[94], q[98]


def load(clients: int, requests: int, call: Callable[[int], float]) -> tuple[list[float], float]:
    """``clients`` threads, ``requests`` calls each; the latencies and the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests):
            latency = call(c * requests + r)
            with lock:
                latencies.append(latency)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return latencies, time.perf_counter() - start


def row(route: str, latencies: list[float], wall: float, unit: str, per: float) -> str:
    p50, p95, p99 = percentiles(latencies)
    return (
        f"| {route} | {len(latencies)} | {len(latencies) / wall:.2f} | {per / wall:.1f} {unit} "
        f"| {p50 * 1000:.0f} | {p95 * 1000:.0f} | {p99 * 1000:.0f} |"
    )


def bench_codec(server, clients: int, requests: int, errors: list[str]) -> None:
    """Compress then decompress rows: the speech clip, ``clients`` x ``requests`` times."""
    import soundfile as sf

    speech, compressed = SPEECH.read_bytes(), {}
    seconds = sf.info(SPEECH).duration

    def compress(i: int) -> float:
        t = time.perf_counter()
        r = server.client.post(
            "/v1/compress", files={"audio": ("s.flac", speech)}, data={"bitrate": "6"}
        )
        if r.status_code != 200:
            errors.append(f"compress {r.status_code}: {r.text}")
        compressed[i] = r.content
        return time.perf_counter() - t

    def decompress(i: int) -> float:
        t = time.perf_counter()
        r = server.client.post("/v1/decompress", content=compressed[i])
        if r.status_code != 200:
            errors.append(f"decompress {r.status_code}: {r.text}")
        return time.perf_counter() - t

    for route, call in (("POST /v1/compress", compress), ("POST /v1/decompress", decompress)):
        latencies, wall = load(clients, requests, call)
        print(row(route, latencies, wall, "s audio/s", len(latencies) * seconds))


def bench_generate(
    server, clients: int, requests: int, duration: float, errors: list[str]
) -> float:
    """Generation row; returns the clips per hour and LM passes it took."""

    def generate(i: int) -> float:
        t = time.perf_counter()
        body = {"prompt": f"prompt {i}", "duration": duration, "cache": False}
        r = server.client.post("/v1/generate", json=body)
        if r.status_code != 202:
            errors.append(f"generate {r.status_code}: {r.text}")
            return time.perf_counter() - t
        job = server.wait_for(r.json()["id"], ("done", "failed"))
        if job["status"] != "done":
            errors.append(f"job {job['id']}: {job.get('error')}")
        return time.perf_counter() - t

    passes = server.metric("audiotok_batch_size_count")
    latencies, wall = load(clients, requests, generate)
    passes = server.metric("audiotok_batch_size_count") - passes
    batch = server.max_batch
    print(
        row(
            f"POST /v1/generate, batches of {batch} ({passes:.0f} LM passes)",
            latencies,
            wall,
            "clips/h",
            len(latencies) * 3600,
        )
    )
    return len(latencies) / wall * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=8, help="codec requests per client")
    parser.add_argument("--gen-requests", type=int, default=4, help="generations per client")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per generation")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=8)
    args = parser.parse_args()
    if args.max_batch < 2:  # the unbatched run is --max-batch 1: there would be no ratio
        parser.error("--max-batch must be at least 2 (it is compared with 1)")

    from test_serve import Server

    errors: list[str] = []
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        generator = random_generator(Path(tmp) / "generator", args.size)
        print("| route | requests | requests/s | throughput | p50 ms | p95 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for batch in (args.max_batch, 1):
            server = Server(
                Path(tmp) / f"state-{batch}",
                "--generator",
                f"gen={generator}",
                "--max-batch",
                str(batch),
                "--batch-wait-ms",
                "50",
                "--device",
                args.device,
                "--max-queued",
                "10000",
            )
            server.max_batch = batch
            try:
                if batch == args.max_batch:
                    bench_codec(server, args.clients, args.requests, errors)
                rates[batch] = bench_generate(
                    server, args.clients, args.gen_requests, args.duration, errors
                )
            finally:
                server.stop()
    print(
        f"\ngeneration throughput, batched / unbatched: {rates[args.max_batch] / rates[1]:.2f}x "
        f"({args.size} model, {args.duration:g} s clips, {args.clients} clients, {args.device})"
    )
    if errors:
        print(f"{len(errors)} errors, e.g. {errors[0]}", file=sys.stderr)
        sys.exit(1)
    print("errors: 0")


if __name__ == "__main__":
    main()
