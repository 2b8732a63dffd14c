"""Streaming latency on CPU: ``codec.streaming()`` chunk by chunk, encode then decode.

A random-weight ``encodec_24khz`` (the ``encodec`` package's architecture, every tensor
perturbed, codebooks calibrated on real audio, written as an official ``.th`` file and loaded
with ``audiotok.load_codec``) streams ``--seconds`` of real audio (the repository's speech and
music clips, mono, 24 kHz, repeated) in chunks of ``--chunks`` samples. Each chunk is encoded
and its codes decoded at once, as a live link would; the time of each step (encode + decode of
one chunk) is recorded. After one untimed warm-up stream, each chunk size streams the signal
``--repeats`` times, the sizes alternating; the figures pool all timed steps.

Printed per chunk size: the chunk's duration, per-step compute time (median, p95, max, ms),
compute per frame, the real-time factor (total compute / audio duration; below 1 keeps up),
the steps that took longer than their chunk lasts, and whether the streamed codes equal the
offline codes of the whole signal (with the count of differing codes if not: chunked and
whole-signal kernels may round differently, which can flip near-ties in the quantizer). For
scale, it also counts the offline codes that change when the offline encode alone runs with
another thread count: a random-weight encoder maps all audio to nearly the same latent, so
the calibrated codebook entries lie close together and many frames sit near a tie, which any
change of rounding can flip.

Usage::

    pip install --no-deps encodec==0.1.1   # builds the reference weights
    python benchmarks/streaming_bench.py [--seconds 10] [--chunks 320 960 4800]
                                         [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

ARCH = "encodec_24khz"


def load_codec(directory: Path):
    """audiotok's codec on the shared random weights (see ``codec_bench.make_weights``)."""
    import torch
    from codec_bench import real_audio
    from reference_models import calibrate_codebooks_, encodec_package_model, import_encodec

    import audiotok

    import_encodec()
    model = encodec_package_model(ARCH, seed=0)
    calibrate_codebooks_(model, "encodec", real_audio(4, 24_000, 1), ARCH)
    path = directory / f"{ARCH}-00000000.th"
    torch.save(model.state_dict(), path)
    return audiotok.load_codec(path)


def stream(codec, audio, chunk: int, bandwidth: float):
    """Streams ``audio`` ``[1, 1, T]``; returns step times (s), frames per step, codes, audio."""
    import torch

    times, frames, codes, decoded = [], [], [], []
    with codec.streaming(1, bandwidth) as s:
        for start in range(0, audio.shape[-1], chunk):
            piece = audio[..., start : start + chunk]
            t0 = time.perf_counter()
            out = s.encode(piece)
            decoded.append(s.decode(out))
            times.append(time.perf_counter() - t0)
            frames.append(out.shape[-1])
            codes.append(out)
        codes.append(s.encode_end())
        decoded += [s.decode(codes[-1]), s.decode_end()]
    return times, frames, torch.cat(codes, dim=-1), torch.cat(decoded, dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunks", type=int, nargs="+", default=[320, 960, 4800])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    args = parser.parse_args()

    import numpy as np
    import torch
    from codec_bench import OtherLoad, real_audio

    warnings.filterwarnings("ignore", category=FutureWarning)  # encodec's weight_norm
    torch.set_num_threads(args.threads)
    rate, hop = 24_000, 320
    with tempfile.TemporaryDirectory() as tmp:
        codec = load_codec(Path(tmp))
    audio = real_audio(args.seconds, rate, 1)
    offline = codec.encode(audio, bandwidth=args.bandwidth)
    offline_audio = codec.decode(offline)
    assert offline.codes[:, 0].unique().numel() > 8, "degenerate codes make a weak check"
    # For scale: how many offline codes another thread count (other rounding) changes.
    other_threads = 1 if args.threads != 1 else 2
    torch.set_num_threads(other_threads)
    control = int((codec.encode(audio, bandwidth=args.bandwidth).codes != offline.codes).sum())
    torch.set_num_threads(args.threads)

    stream(codec, audio[..., :rate], hop, args.bandwidth)  # warm-up, untimed
    results: dict[int, dict] = {c: {"times": [], "frames": [], "diff": 0, "diff0": 0, "err": 0.0}
                                for c in args.chunks}  # fmt: skip
    others = OtherLoad()
    for _ in range(args.repeats):
        for chunk in args.chunks:
            times, frames, codes, decoded = stream(codec, audio, chunk, args.bandwidth)
            r = results[chunk]
            r["times"] += times
            r["frames"] += frames
            if codes.shape != offline.codes.shape:
                r["diff"] = -1
            else:
                differ = codes != offline.codes
                r["diff"] = max(r["diff"], int(differ.sum()))
                r["diff0"] = max(r["diff0"], int(differ[:, 0].sum()))
                n = offline_audio.shape[-1]
                err = (decoded[..., :n] - offline_audio).abs().max().item()
                r["err"] = max(r["err"], err)
    load = others.cores()

    print(f"{ARCH}, {args.bandwidth:g} kbps, {args.seconds:g} s of real audio, {args.threads} "
          f"torch threads, {args.repeats} streams per chunk size; step = encode + decode of "
          f"one chunk; other processes used {load:.2f} cores on average meanwhile")  # fmt: skip
    print(f"{'chunk':>6} {'ms':>6} {'median':>7} {'p95':>7} {'max':>7} {'per frame':>9} "
          f"{'RTF':>6} {'late':>9}  streamed codes = offline "
          f"({offline.codes.numel()} codes)")  # fmt: skip
    for chunk in args.chunks:
        r = results[chunk]
        t = np.array(r["times"]) * 1e3
        duration = chunk / rate * 1e3
        rtf = t.sum() / (args.repeats * args.seconds * 1e3)
        per_frame = t.sum() / max(1, sum(r["frames"]))
        late = int((t > duration).sum())
        same = "yes" if r["diff"] == 0 else f"no: {r['diff']} differ, {r['diff0']} in codebook 0"
        if r["diff"] < 0:
            same = "no: shapes differ"
        print(f"{chunk:6d} {duration:6.1f} {statistics.median(t):7.2f} "
              f"{np.percentile(t, 95):7.2f} {t.max():7.2f} {per_frame:9.2f} {rtf:6.3f} "
              f"{late:4d}/{len(t):<4d}  {same} (audio within {r['err']:.1e})")  # fmt: skip
    print(f"for scale: offline, {other_threads} torch thread(s) instead of {args.threads} "
          f"change {control} of the {offline.codes.numel()} offline codes (same model, "
          "same audio)")  # fmt: skip


if __name__ == "__main__":
    main()
