"""Where a codec's mel distance is spent: in quiet frames, or above a frequency.

On ``quality.py``'s validation crops (same manifest, seed and crop length), each decoded crop is
measured three ways against its input:

- as decoded (``quality.py``'s mel distance);
- with its quiet frames (20 ms frames of the input below ``--quiet-db`` dBFS) replaced by the
  input's: what a codec that gives pauses back exactly would score;
- with everything above ``--above`` Hz replaced by the input's (an FFT of the whole crop):
  what a codec perfect above that frequency would score.

The gap between the first figure and each of the others is the share of the distance spent
there. For speech, PESQ-WB the same way, with the band split at ``--split`` Hz (default 4 kHz;
PESQ-WB hears nothing above 8 kHz): as decoded, quiet frames as input, above the split as
input, below it as input. Also prints the mel distance of the codec's output for digital
silence against digital silence (the level alone is in ``quality.py``).

Usage::

    python benchmarks/quality_where.py --manifest data/audio/manifest.tsv [--kbps 6]
        [--above 8000] [--split 4000] [--quiet-db -50] [--model audiotok_24khz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from quality import codec_roundtrip, load_crops, pesq_wb

import audiotok
from audiotok.train.losses import mel_distance


def distance(y: np.ndarray, x: np.ndarray, rate: int) -> float:
    return float(
        mel_distance(torch.from_numpy(y)[None, None], torch.from_numpy(x)[None, None], rate)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--model", default="audiotok_24khz")
    parser.add_argument("--kbps", type=float, default=6.0)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--above", type=float, default=8000.0, help="Hz")
    parser.add_argument("--split", type=float, default=4000.0, help="Hz, for speech's PESQ-WB")
    parser.add_argument("--quiet-db", type=float, default=-50.0, help="dBFS per 20 ms frame")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = audiotok.load_codec(args.model)
    rate = codec.sample_rate
    crops, categories = load_crops(args, rate)
    with torch.inference_mode():
        silence = np.zeros(2 * rate, dtype=np.float32)
        idle = codec_roundtrip(codec, silence, args.kbps)[0][: silence.size]
        print(f"{args.model} {args.kbps:g} kbps, digital silence: mel distance "
              f"{distance(idle, silence, rate):.3f} against silence")  # fmt: skip
        frame = rate // 50
        rows: dict[str, list[tuple[float, float, float, float]]] = {}
        speech_pesq: list[tuple[float | None, ...]] = []
        freqs = np.fft.rfftfreq(crops.shape[-1], 1 / rate)
        for x, category in zip(crops, categories, strict=True):
            y = codec_roundtrip(codec, x, args.kbps)[0][: x.size]
            n = x.size // frame
            frames_x = x[: n * frame].reshape(n, frame).astype(np.float64)
            quiet = 10 * np.log10(np.mean(frames_x**2, axis=1) + 1e-20) < args.quiet_db
            pauses = y.copy()
            pauses[: n * frame].reshape(n, frame)[quiet] = x[: n * frame].reshape(n, frame)[quiet]
            spectra = np.fft.rfft(y), np.fft.rfft(x)
            band = with_input_where(*spectra, x.size, freqs > args.above)
            rows.setdefault(category, []).append(
                (distance(y, x, rate), distance(pauses, x, rate), distance(band, x, rate),
                 float(quiet.mean()))
            )  # fmt: skip
            if category == "speech":
                low = freqs < args.split
                variants = (
                    y,
                    pauses,
                    with_input_where(*spectra, x.size, ~low),
                    with_input_where(*spectra, x.size, low),
                )
                speech_pesq.append(tuple(pesq_wb(v, x, rate) for v in variants))
    print(f"\n| category | mel distance | quiet frames as input | above {args.above:g} Hz as "
          "input | quiet frames |")  # fmt: skip
    print("| --- | --: | --: | --: | --: |")
    for category, values in sorted(rows.items()):
        mean = np.mean(values, axis=0)
        print(f"| {category} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.0%} |")
    if speech_pesq:
        # PESQ-WB hears 16 kHz audio: above 8 kHz counts for nothing, so the split is lower.
        print(f"\n| speech PESQ-WB | as decoded | quiet frames as input | above {args.split:g} Hz "
              f"as input | below {args.split:g} Hz as input | crops |")  # fmt: skip
        print("| --- | --: | --: | --: | --: | --: |")
        kept = [v for v in speech_pesq if None not in v]
        mean = np.mean(kept, axis=0) if kept else [float("nan")] * 4
        print("| audiotok | " + " | ".join(f"{m:.2f}" for m in mean) + f" | {len(kept)} |")


def with_input_where(
    spectrum_y: np.ndarray, spectrum_x: np.ndarray, n: int, bins: np.ndarray
) -> np.ndarray:
    """The ``n`` samples of ``spectrum_y`` (the rFFT of a whole crop) with the bins where
    ``bins`` is true taken from ``spectrum_x``; each crop's two spectra are computed once."""
    return np.fft.irfft(np.where(bins, spectrum_x, spectrum_y), n=n).astype(np.float32)


if __name__ == "__main__":
    main()
