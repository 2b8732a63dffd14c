"""Peak memory and wall time of compressing and decompressing long files, streamed or not.

For each model and duration, a fresh process runs ``audiotok.compression.files.compress_file`` then
``decompress_file`` (to FLAC) on a FLAC at the model's rate made of the repository's real clips
repeated, and reports the peak resident memory of that process (``VmHWM``) and the wall
time of the two calls. Files longer than ``STREAM_SECONDS`` are processed as streams, block by
block; ``exact`` rows run the one-pass path (``exact=True``), whose memory grows with the
length, for the durations up to ``--exact-up-to`` minutes, as the reference for the wall time.

Models: random-weight ``encodec_24khz`` (mono) and ``encodec_48khz`` (stereo, streamed segment
by segment) in the official ``.th`` format, or the packaged ``audiotok_24khz``. Target: a peak
under 1 GiB at 1, 9 and 60 minutes, streamed no slower than one pass.

Usage::

    python benchmarks/memory_bench.py [--minutes 1 9 60] [--exact-up-to 9] [--threads 2]
        [--models encodec_24khz encodec_48khz]
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


def child(audio: Path, weights: str, out: Path, threads: int, exact: bool) -> None:
    import torch

    import audiotok
    from audiotok.compression.files import compress_file, decompress_file

    torch.set_num_threads(threads)
    codec = audiotok.load_codec(weights)
    start = time.perf_counter()
    compress_file(audio, out / "x.atok", codec, bandwidth=6.0, overwrite=True, exact=exact)
    middle = time.perf_counter()
    decompress_file(out / "x.atok", out / "x.flac", codec, overwrite=True, exact=exact)
    end = time.perf_counter()
    print(json.dumps({"compress": middle - start, "decompress": end - middle, "peak": peak_rss()}))


def peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM``, which ``execve`` resets.

    (``ru_maxrss`` does not: Linux keeps it across ``execve``, so a child started from a
    large parent would report at least the parent's size.)
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_audio_file(path: Path, minutes: float, rate: int, channels: int) -> None:
    import soundfile as sf
    from codec_bench import real_audio

    one_minute = real_audio(60, rate, channels)[0].numpy().T
    with sf.SoundFile(path, "w", rate, channels, "PCM_16") as f:
        whole, rest = divmod(int(minutes * 60 * rate), len(one_minute))
        for _ in range(whole):
            f.write(one_minute)
        f.write(one_minute[:rest])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 9.0, 60.0])
    parser.add_argument("--exact-up-to", type=float, default=9.0,
                        help="run the one-pass path too for durations up to this")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["encodec_24khz", "encodec_48khz"],
                        choices=["encodec_24khz", "encodec_48khz", "audiotok_24khz"])  # fmt: skip
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        audio, weights, out = args.child
        child(Path(audio), weights, Path(out), args.threads, args.exact)
        return

    from exactness_bench import random_official

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.models:
            if model == "audiotok_24khz":
                weights, rate, channels = model, 24_000, 1
            else:
                from reference_models import ARCHS

                weights = str(random_official(model, tmp))
                rate, channels = ARCHS[model]["sample_rate"], ARCHS[model]["channels"]
            for minutes in args.minutes:
                audio = tmp / f"{model}-{minutes:g}min.flac"
                write_audio_file(audio, minutes, rate, channels)
                modes = [False, True] if minutes <= args.exact_up_to else [False]
                for exact in modes:
                    cmd = [sys.executable, __file__, "--child", str(audio), weights, str(tmp),
                           "--threads", str(args.threads)]  # fmt: skip
                    cmd += ["--exact"] if exact else []
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    rows.append((model, minutes, "one pass" if exact else "streamed", result))
                    print(model, minutes, rows[-1][2], result, file=sys.stderr, flush=True)
                audio.unlink()
    print(f"compress + decompress to FLAC, 6 kbps, {args.threads} threads, one process per row")
    print("| model | minutes | path | compress s | decompress s | x real time | peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, minutes, path, r in rows:
        total = r["compress"] + r["decompress"]
        print(f"| {model} | {minutes:g} | {path} | {r['compress']:.1f} | {r['decompress']:.1f} "
              f"| {minutes * 60 / total:.1f} | {r['peak'] / 2**20:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
