"""Peak memory of compressing and decompressing long files: 1 minute against 60 minutes.

For each duration, a fresh process runs ``audiotok.compression.compress_file`` then
``decompress_file`` on a FLAC at the model's rate made of the repository's real clips
repeated, with a random-weight ``--model`` (``encodec_24khz``, or ``encodec_48khz``, which
streams segment by segment) in the official ``.th`` format; the script prints each run's
peak resident memory (the child's ``ru_maxrss``), its wall time, and the ratio. Files longer
than ``STREAM_SECONDS`` (10 minutes) are processed as streams, so the 60-minute peak should
stay close to the 1-minute one.

Usage::

    python benchmarks/memory_bench.py [--minutes 1 60] [--threads 2] [--model encodec_48khz]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def child(audio: Path, weights: Path, out: Path, threads: int) -> None:
    import torch

    import audiotok
    from audiotok.compression import compress_file, decompress_file

    torch.set_num_threads(threads)
    codec = audiotok.load_codec(weights)
    start = time.perf_counter()
    compress_file(audio, out / "x.atok", codec, bandwidth=6.0, overwrite=True)
    decompress_file(out / "x.atok", out / "x.wav", codec, overwrite=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "peak_bytes": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=["encodec_24khz", "encodec_48khz"],
                        default="encodec_24khz")  # fmt: skip
    parser.add_argument("--child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads)
        return

    import soundfile as sf
    from codec_bench import make_weights, real_audio
    from reference_models import ARCHS, import_encodec

    import_encodec()
    arch = ARCHS[args.model]
    rate, channels = arch["sample_rate"], arch["channels"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_weights(args.model, tmp, 6.0)
        weights = tmp / f"{args.model}-00000000.th"
        one_minute = real_audio(60, rate, channels)[0].numpy().T
        for minutes in args.minutes:
            audio = tmp / f"{minutes:g}min.flac"
            with sf.SoundFile(audio, "w", rate, channels, "PCM_16") as f:
                whole, rest = divmod(int(minutes * 60 * rate), len(one_minute))
                for _ in range(whole):
                    f.write(one_minute)
                f.write(one_minute[:rest])
            cmd = [sys.executable, __file__, "--child", str(audio), str(weights), str(tmp),
                   "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append((minutes, json.loads(out.strip().splitlines()[-1])))
    base = rows[0][1]["peak_bytes"]
    print(
        f"compress + decompress, {args.model}, 6 kbps, {args.threads} threads, one process per row"
    )
    print(f"{'minutes':>8} {'wall s':>8} {'peak MiB':>9} {'vs first':>9}")
    for minutes, r in rows:
        print(f"{minutes:8g} {r['seconds']:8.1f} {r['peak_bytes'] / 2**20:9.0f} "
              f"{r['peak_bytes'] / base:8.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
