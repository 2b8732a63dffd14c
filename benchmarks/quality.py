"""Codec quality: an audiotok codec against Opus (ffmpeg's libopus) at the same bitrates.

Both codecs code the same crops of the validation split (the held-out source packages of
:class:`~audiotok.train.config.DataConfig`), drawn as training validation draws them: mono, at
the model's rate, normalised to -20 dBFS +- 6 dB, spread evenly over the categories. At each
bandwidth (kbps):

- audiotok: ``audiotok.compress`` to ``.atok`` bytes (adaptive rANS), ``audiotok.decompress``;
- Opus: ``ffmpeg -i in.wav -c:a libopus -b:a {kbps}k out.opus`` with libopus' defaults
  otherwise (VBR, ``-application audio``, 20 ms frames, complexity 10), decoded by
  ``ffmpeg -i out.opus -ar RATE -ac 1`` (ffmpeg honours the Ogg pre-skip).

Actual kbps is the whole file's size over the crop's duration, container included for both
(``.atok`` header and packets; Ogg pages, OpusHead and OpusTags): on short crops this overhead
is a visible share of the bitrate. The decoded audio is aligned to the reference by the integer
lag within +-1 ms that maximises their cross-correlation (both codecs; the mean lag of each row
is printed). Pre-skip is honoured (decoded and input lengths match; 12 and 24 kbps come out at
lag 0), but at 6-8 kbps (SILK) ffmpeg's decoder, resampling from 48 kHz, delivers the audio
about 2.5 samples late at 24 kHz, which alone would cost Opus 3-5 dB of SI-SDR.

A second table, *as recorded*, repeats the crops whose recording is below the model's rate
(the validation speech is 16 kHz material) with both codecs given the crop at the recording's
rate, as ``audiotok compress FILE`` and ``ffmpeg -i FILE`` get such a file: the crop resampled
down to that rate, coded, decoded at that rate (``decompress`` gives back the rate it was given;
ffmpeg decodes with ``-ar``), resampled up again and scored against the same crop. The first
table measures the codec on what it never sees from a file of that rate: empty bands above the
recording's Nyquist frequency, which it fills with a low noise floor that mel distance counts
and a resampler back to the recording's rate removes.

Rows compare the two codecs at the same *target* kbps; audiotok's entropy coder can land well
below its nominal bandwidth, and libopus' VBR a little off its target: read the actual column.

Metrics per crop (means per row):

- mel distance: mean L1 of log10 mel spectrograms (80 bands, FFT 512/1024/2048), lower better;
- SI-SDR: scale-invariant signal-to-distortion ratio in dB, higher better;
- speech only: PESQ-WB (ITU-T P.862.2 MOS-LQO, 1.04-4.64, both signals resampled to 16 kHz by
  soxr) and STOI (short-time objective intelligibility, 0-1); crops PESQ rejects (silent,
  too short) are skipped and counted.

Usage::

    python benchmarks/quality.py --manifest data/audio/manifest.tsv [--model audiotok_24khz]
        [--bandwidths 1.5 3 6 12 24] [--items 60] [--seconds 5] [--seed 0] [--json out.json]
        [--pictures DIR [--picture-kbps 6]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

MAX_LAG_SECONDS = 0.001
METRICS = ("mel", "si_sdr", "pesq", "stoi")


class BenchError(Exception):
    """A problem with the environment (ffmpeg), reported in one line."""


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="TSV manifest")
    parser.add_argument("--model", default="audiotok_24khz", help="codec name or path")
    parser.add_argument("--bandwidths", type=float, nargs="+", default=[1.5, 3.0, 6.0, 12.0, 24.0])
    parser.add_argument("--items", type=int, default=60, help="crops, spread over categories")
    parser.add_argument("--seconds", type=float, default=5.0, help="crop length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--pictures", type=Path, help="write a log-mel PNG per category here (needs matplotlib)"
    )
    parser.add_argument("--picture-kbps", type=float, default=6.0, help="bitrate of the pictures")
    return parser.parse_args()


def check_ffmpeg() -> None:
    """Raises BenchError unless ffmpeg with the libopus encoder is on PATH."""
    if shutil.which("ffmpeg") is None:
        raise BenchError("ffmpeg is not on PATH (it is needed for the Opus side)")
    out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True)
    if "libopus" not in out.stdout:
        raise BenchError("this ffmpeg has no libopus encoder")


def ffmpeg(*args: str) -> None:
    """Runs ffmpeg quietly; BenchError with its message if it fails."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-y", *args], capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise BenchError(f"ffmpeg {' '.join(args)}: {lines[-1]}")


def load_crops(args: argparse.Namespace, rate: int) -> tuple[np.ndarray, list[str]]:
    """The fixed validation crops ``[N, T]`` at ``rate`` and their categories."""
    crops, categories, _ = load_crops_and_rates(args, rate)
    return crops, categories


def load_crops_and_rates(
    args: argparse.Namespace, rate: int
) -> tuple[np.ndarray, list[str], list[int]]:
    """:func:`load_crops` and the sample rate of each crop's recording."""
    from audiotok.train.config import DataConfig
    from audiotok.train.data import CropSampler, read_manifest, split_by_source

    config = dataclasses.replace(DataConfig(), segment=args.seconds, validation_items=args.items)
    _, valid = split_by_source(read_manifest(args.manifest), config.validation_sources)
    if not valid:
        raise ValueError(f"{args.manifest}: no file of {', '.join(config.validation_sources)}")
    crops, items = CropSampler(valid, config, rate, args.seed).fixed_items(args.items)
    categories = [item.category for item in items]
    return crops[:, 0].numpy(), categories, [item.sample_rate for item in items]


def codec_roundtrip(
    codec: Any, x: np.ndarray, kbps: float, rate: int | None = None
) -> tuple[np.ndarray, float]:
    """(decoded ``[T]``, actual kbps) of ``x`` (at ``rate``, default the codec's) through audiotok.

    The decoded audio has ``x``'s rate: ``decompress`` gives back what was compressed.
    """
    import torch

    import audiotok

    rate = rate or codec.sample_rate
    data = audiotok.compress(codec, torch.from_numpy(x)[None], rate, bandwidth=kbps)
    audio, _ = audiotok.decompress(data, codec=codec)
    return audio.mean(dim=0).numpy(), 8 * len(data) / (len(x) / rate) / 1000


def silence_levels(codec: Any, bandwidths: list[float], seconds: float = 2.0) -> dict[str, float]:
    """Level (dBFS; -inf for exact zeros) of digital silence through each codec and kbps.

    A codec should give silence back: pauses and fade-outs are full of it, and a decoder's
    idle output is heard there. The tables count it within each crop's mel distance;
    ``quality_where.py`` says how much of it.
    """
    x = np.zeros(round(seconds * codec.sample_rate), dtype=np.float32)

    def level(y: np.ndarray) -> float:
        power = float(np.mean(y.astype(np.float64) ** 2))
        return float(10 * np.log10(power)) if power > 0 else float("-inf")

    levels = {f"{codec.model_id} {k:g}": level(codec_roundtrip(codec, x, k)[0]) for k in bandwidths}
    with tempfile.TemporaryDirectory() as tmp:
        for k in bandwidths:
            levels[f"opus {k:g}"] = level(opus_roundtrip(x, k, codec.sample_rate, Path(tmp))[0])
    return levels


def opus_roundtrip(x: np.ndarray, kbps: float, rate: int, tmp: Path) -> tuple[np.ndarray, float]:
    """(decoded ``[T']``, actual kbps with the Ogg container) of ``x`` through libopus."""
    import soundfile as sf

    src, coded, out = tmp / "in.wav", tmp / "out.opus", tmp / "dec.wav"
    sf.write(src, x, rate, subtype="FLOAT")
    ffmpeg("-i", str(src), "-c:a", "libopus", "-b:a", f"{kbps:g}k", str(coded))
    ffmpeg("-i", str(coded), "-ar", str(rate), "-ac", "1", "-f", "wav", str(out))
    decoded, _ = sf.read(out, dtype="float32")
    return decoded, 8 * coded.stat().st_size / (len(x) / rate) / 1000


def align(decoded: np.ndarray, reference: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """``decoded`` shifted by the lag in +-``max_lag`` best correlated with ``reference``.

    Returns:
        The aligned signal, zero-padded or cut to the reference's length, and the lag (> 0:
        ``decoded`` was late).
    """
    n = len(reference)
    padded = np.zeros(n + 2 * max_lag, dtype=np.float32)
    padded[max_lag : max_lag + min(n, len(decoded))] = decoded[:n]
    lag = int(np.argmax(np.correlate(padded, reference, "valid"))) - max_lag
    return padded[max_lag + lag : max_lag + lag + n], lag


def score(decoded: np.ndarray, reference: np.ndarray, rate: int, speech: bool) -> dict:
    """The metrics of one decoded crop; PESQ is None where PESQ rejects the crop."""
    import torch

    from audiotok.train.losses import mel_distance, si_sdr

    est, ref = torch.from_numpy(decoded)[None, None], torch.from_numpy(reference)[None, None]
    result = {"mel": float(mel_distance(est, ref, rate)), "si_sdr": float(si_sdr(est, ref))}
    if speech:
        import pystoi

        result["pesq"] = pesq_wb(decoded, reference, rate)
        result["stoi"] = float(pystoi.stoi(reference, decoded, rate, extended=False))
    return result


def pesq_wb(decoded: np.ndarray, reference: np.ndarray, rate: int) -> float | None:
    """PESQ-WB of ``decoded`` against ``reference`` (both resampled to 16 kHz by soxr); None
    where PESQ rejects the pair (silent, too short)."""
    import pesq
    import soxr

    ref16, deg16 = (soxr.resample(s, rate, 16_000) for s in (reference, decoded))
    try:
        return float(pesq.pesq(16_000, ref16, deg16, "wb"))
    except pesq.PesqError:
        return None


def evaluate(codec: Any, crops: np.ndarray, categories: list[str], bandwidths: list[float],
             input_rates: list[int] | None = None) -> list[dict]:  # fmt: skip
    """One record per crop, codec and bandwidth.

    With ``input_rates``, each crop is given to both codecs at its rate (the crop, at the codec's
    rate, resampled to it) and their output is resampled back to the codec's rate to be scored
    against the crop.
    """
    import soxr

    rate, records = codec.sample_rate, []
    max_lag = round(MAX_LAG_SECONDS * rate)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (x, category) in enumerate(zip(crops, categories, strict=True)):
            print(f"item {i + 1}/{len(crops)} ({category})", file=sys.stderr, flush=True)
            given = input_rates[i] if input_rates else rate
            x_in = x if given == rate else soxr.resample(x, rate, given).astype(np.float32)
            for kbps in bandwidths:
                for name, (decoded, actual) in (
                    (codec.model_id, codec_roundtrip(codec, x_in, kbps, given)),
                    ("opus", opus_roundtrip(x_in, kbps, given, Path(tmp))),
                ):
                    if given != rate:
                        decoded = soxr.resample(decoded, given, rate).astype(np.float32)
                    aligned, lag = align(decoded, x, max_lag)
                    record = {"item": i, "category": category, "codec": name, "kbps": kbps,
                              "actual_kbps": actual, "lag": lag}  # fmt: skip
                    record.update(score(aligned, x, rate, category == "speech"))
                    records.append(record)
    return records


def summarise(records: list[dict]) -> list[dict]:
    """Mean of each metric per (category, codec, kbps), in that order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["category"], r["codec"] == "opus", r["codec"], r["kbps"])].append(r)
    rows = []
    for (category, _, name, kbps), group in sorted(groups.items(), key=lambda g: g[0]):
        row = {"category": category, "codec": name, "kbps": kbps, "n": len(group)}
        for key in ("actual_kbps", "lag", *METRICS):
            values = [r[key] for r in group if r.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        row["pesq_skipped"] = sum(1 for r in group if "pesq" in r and r["pesq"] is None)
        rows.append(row)
    return rows


def fmt(value: float | None, digits: int) -> str:
    """``value`` rounded, or ``-`` for None."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    """The results as a markdown table."""
    lines = [
        "| category | codec | kbps | actual kbps | mel dist (lower better) | SI-SDR dB | PESQ-WB "
        "| STOI | lag (samples) | n |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['category']} | {r['codec']} | {r['kbps']:g} | {fmt(r['actual_kbps'], 2)} "
            f"| {fmt(r['mel'], 3)} | {fmt(r['si_sdr'], 2)} | {fmt(r['pesq'], 2)} "
            f"| {fmt(r['stoi'], 3)} | {fmt(r['lag'], 1)} | {r['n']} |"
        )
    return "\n".join(lines)


def checks(rows: list[dict], model: str, ours: float, theirs: float) -> list[dict]:
    """Per category, whether ``model`` at ``ours`` kbps beats Opus at ``theirs`` kbps."""
    find = {(r["category"], r["codec"], r["kbps"]): r for r in rows}
    results = []
    for category in sorted({r["category"] for r in rows}):
        a, b = find.get((category, model, ours)), find.get((category, "opus", theirs))
        if a is None or b is None:
            continue
        result = {"category": category, "model_kbps": ours, "opus_kbps": theirs}
        for key in METRICS:
            if a[key] is not None and b[key] is not None:
                better = a[key] < b[key] if key == "mel" else a[key] > b[key]
                result[key] = {"model": a[key], "opus": b[key], "beats": bool(better)}
        results.append(result)
    return results


def check_table(results: list[dict], model: str, ours: float, theirs: float) -> str:
    """The checks of :func:`checks` as a markdown table."""
    lines = [
        f"{model} {ours:g} kbps vs Opus {theirs:g} kbps (beats: lower mel, higher others)",
        "",
        "| category | mel | SI-SDR | PESQ-WB | STOI |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        cells = [
            f"{'yes' if r[k]['beats'] else 'no'} ({r[k]['model']:.2f} vs {r[k]['opus']:.2f})"
            if k in r else "-"
            for k in METRICS
        ]  # fmt: skip
        lines.append(f"| {r['category']} | " + " | ".join(cells) + " |")
    if not results:
        return f"(no rows to compare: it needs {model} at {ours:g} and Opus at {theirs:g} kbps)"
    return "\n".join(lines)


def machine() -> str:
    """CPU model, torch and ffmpeg versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(ln.split(":", 1)[1].strip() for ln in lscpu.splitlines()
                   if ln.startswith("Model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return f"{cpu}, torch {torch.__version__}, {' '.join(version.split()[:3])}"


def describe_rates(chosen: list[int], categories: list[str], rates: list[int]) -> str:
    """E.g. ``20 speech (16000 Hz), 2 sfx (11000, 22050 Hz)`` for the crops ``chosen``."""
    parts = []
    for category in sorted({categories[i] for i in chosen}):
        mine = [rates[i] for i in chosen if categories[i] == category]
        parts.append(f"{len(mine)} {category} ({', '.join(map(str, sorted(set(mine))))} Hz)")
    return ", ".join(parts) or "none"


def run(args: argparse.Namespace) -> None:
    """Measures, prints the report and writes the JSON."""
    start = time.perf_counter()
    check_ffmpeg()
    if not args.manifest.is_file():
        raise ValueError(f"{args.manifest}: no such manifest")
    if args.items < 1 or args.seconds <= 0:
        raise ValueError("--items and --seconds must be positive")
    import torch

    import audiotok

    torch.set_num_threads(args.threads)
    codec = audiotok.load_codec(args.model)
    for kbps in args.bandwidths:
        codec.check_bandwidth(kbps)
    crops, categories, rates = load_crops_and_rates(args, codec.sample_rate)
    # Recordings below the codec's rate, given to both codecs at their own rate, as
    # `audiotok compress FILE` and `ffmpeg -i FILE` get them.
    low = [i for i, r in enumerate(rates) if r < codec.sample_rate]
    with torch.inference_mode():
        records = evaluate(codec, crops, categories, args.bandwidths)
        recorded = evaluate(codec, crops[low], [categories[i] for i in low], args.bandwidths,
                            [rates[i] for i in low])  # fmt: skip
    for r in recorded:
        r["item"], r["input_rate"] = low[r["item"]], rates[low[r["item"]]]
    rows, recorded_rows = summarise(records), summarise(recorded)
    with torch.inference_mode():
        silence = silence_levels(codec, args.bandwidths)
    pairs = [(6.0, 6.0), (6.0, 12.0)]
    verdicts = {f"{a:g}_vs_opus_{b:g}": checks(rows, codec.model_id, a, b) for a, b in pairs}
    recorded_verdict = checks(recorded_rows, codec.model_id, 6.0, 6.0)
    skipped = sum(r["pesq_skipped"] for r in rows)
    report = {"machine": machine(), "command": shlex.join(["python", *sys.argv]),
              "elapsed_s": time.perf_counter() - start, "rows": rows, "checks": verdicts,
              "pesq_skipped": skipped, "silence_dbfs": silence, "records": records,
              "as_recorded": {"rows": recorded_rows, "check_6_vs_opus_6": recorded_verdict,
                              "records": recorded}}  # fmt: skip
    print(f"Machine: {report['machine']}\nCommand: {report['command']}")
    print(
        f"Elapsed: {report['elapsed_s']:.1f} s; {len(crops)} crops of {args.seconds:g} s at "
        f"{codec.sample_rate} Hz from {args.manifest} (validation split), seed {args.seed}\n"
    )
    print(table(rows))
    print(f"\nPESQ skipped on {skipped} speech decodes (silent or too short).")
    print("\nDigital silence in (2 s), level out in dBFS:")
    print("| codec | " + " | ".join(f"{k:g} kbps" for k in args.bandwidths) + " |")
    print("| --- |" + " --: |" * len(args.bandwidths))
    for name in (codec.model_id, "opus"):
        cells = (f"{silence[f'{name} {k:g}']:.1f}" for k in args.bandwidths)
        print(f"| {name} | " + " | ".join(cells) + " |")
    for (a, b), results in zip(pairs, verdicts.values(), strict=True):
        title = "Headline" if a == b else "Stretch"
        print(f"\n{title}: " + check_table(results, codec.model_id, a, b))
    print(
        f"\nAs recorded: the crops of recordings below {codec.sample_rate} Hz "
        f"({describe_rates(low, categories, rates)}), each given to both codecs at its "
        f"recording's rate and scored at {codec.sample_rate} Hz against the same crop:\n"
    )
    print(table(recorded_rows))
    print("\nHeadline, as recorded: " + check_table(recorded_verdict, codec.model_id, 6.0, 6.0))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.pictures:
        from quality_pictures import write_pictures

        kbps, rate = args.picture_kbps, codec.sample_rate
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            roundtrips = {
                f"{codec.model_id} {kbps:g} kbps": lambda x: codec_roundtrip(codec, x, kbps)[0],
                f"Opus {kbps:g} kbps": lambda x: opus_roundtrip(x, kbps, rate, Path(tmp))[0],
            }
            paths = write_pictures(codec, crops, categories, args.pictures, kbps, roundtrips)
        print("\nPictures: " + ", ".join(str(p) for p in paths))


def main() -> None:
    """Entry point: one-line errors on stderr, exit code 1."""
    args = parse_args()
    from audiotok.errors import AudiotokError

    try:
        run(args)
    except (AudiotokError, BenchError, ValueError, OSError) as exc:
        print(f"quality.py: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
