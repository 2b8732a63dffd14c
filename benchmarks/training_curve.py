"""The default codec's curve of quality against compute, from ``training/history.jsonl``.

The history holds every slice, ablation arms included. The chain that led to the committed
state is walked back from the last line: each slice's predecessor is the latest earlier line
that ended at the step where it started (an adopted arm's line is appended after the arms it
beat, so it is the one found). For each slice of the chain it prints the audio seen so far,
the training time per device and the validation at one bitrate (mel distance / SI-SDR per
category; the averaged weights where the line has them, marked ``*``).

Then a fit of each metric against log2 of the audio seen, over the chain's slices from
``--since`` on (default: the current recipe's start), and what the fit predicts: the change per
doubling of the audio seen, and where a ``--target`` mel distance would be reached, in audio
hours and in hours of the last CPU slice's throughput. A log-linear fit is what such curves
look like between recipe changes; it says nothing about a change of recipe.

Usage::

    python benchmarks/training_curve.py [--history training/history.jsonl] [--kbps 6]
        [--since 36314] [--target speech=0.538]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

CATEGORIES = ("music", "sfx", "speech")


def read_history(path: Path) -> list[dict]:
    """The history's lines, in file order."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def chain(history: list[dict]) -> list[dict]:
    """The slices that led to the last line's state, oldest first.

    Example: lines ``[0, 10]``, ``[10, 20]`` (arm A), ``[10, 21]`` (arm B, adopted), ``[21, 30]``
    give the chain ``[0, 10]``, ``[10, 21]``, ``[21, 30]``.
    """
    if not history:
        return []
    path, index = [history[-1]], len(history) - 1
    while path[-1]["steps"][0] > 0:
        start = path[-1]["steps"][0]
        earlier = [i for i in range(index) if history[i]["steps"][1] == start]
        if not earlier:
            raise ValueError(f"no slice of the history ends at step {start}")
        index = earlier[-1]
        path.append(history[index])
    return path[::-1]


def validation(line: dict, kbps: float) -> tuple[dict[str, tuple[float, float]], bool]:
    """``{category: (mel distance, SI-SDR)}`` at ``kbps`` and whether they are averaged weights."""
    averaged = "validation_averaged" in line
    table = line["validation_averaged"] if averaged else line.get("validation", {})
    values = {}
    for category in CATEGORIES:
        entry = table.get(f"{kbps:g}kbps/{category}")
        if entry:
            values[category] = (entry["mel_distance"], entry["si_sdr"])
    return values, averaged


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``: ``(a, b)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def curve_table(slices: list[dict], kbps: float) -> str:
    rows = [
        "| steps | date | device | audio h | GPU s | CPU min | " + " | ".join(CATEGORIES) + " |",
        "| --- | --- | --- | --: | --: | --: | " + " | ".join("---" for _ in CATEGORIES) + " |",
    ]
    gpu = cpu = 0.0
    for line in slices:
        if line["device"] == "cpu":
            cpu += line["train_seconds"] / 60
        else:
            gpu += line["train_seconds"]
        values, averaged = validation(line, kbps)
        cells = [
            f"{values[c][0]:.3f} / {values[c][1]:.2f}{'*' if averaged else ''}"
            if c in values
            else "-"
            for c in CATEGORIES
        ]
        rows.append(
            f"| {line['steps'][0]}-{line['steps'][1]} | {line['date'][:10]} | {line['device']} | "
            f"{line['totals']['audio_seconds'] / 3600:.1f} | {gpu:.0f} | {cpu:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(rows)


def predictions(slices: list[dict], kbps: float, since: int, targets: dict[str, float]) -> str:
    points = [line for line in slices if line["steps"][0] >= since]
    if len(points) < 2:
        return f"fewer than two slices of the chain start at or after step {since}: no fit"
    hours = [line["totals"]["audio_seconds"] / 3600 for line in points]
    xs = [math.log2(h) for h in hours]
    cpu = [line for line in points if line["device"] == "cpu"]
    # Audio hours per hour of training on the last CPU slice: what more CPU time buys.
    rate = cpu[-1]["audio_seconds"] / cpu[-1]["train_seconds"] if cpu else None
    lines = [
        f"fit over {len(points)} slices from step {points[0]['steps'][0]} "
        f"({hours[0]:.1f} to {hours[-1]:.1f} audio hours), {kbps:g} kbps, y = a + b log2(hours):",
        "",
        "| category | mel per doubling | SI-SDR dB per doubling | mel now (fit) | target | "
        "audio h to target | CPU h to target |",
        "| --- | --: | --: | --: | --: | --: | --: |",
    ]
    for category in CATEGORIES:
        pairs = [
            (x, validation(line, kbps)[0].get(category)) for x, line in zip(xs, points, strict=True)
        ]
        pairs = [(x, v) for x, v in pairs if v is not None]
        if len(pairs) < 2:
            continue
        a_mel, b_mel = fit([x for x, _ in pairs], [v[0] for _, v in pairs])
        _, b_sdr = fit([x for x, _ in pairs], [v[1] for _, v in pairs])
        now = a_mel + b_mel * xs[-1]
        target = targets.get(category)
        reach = cpu_hours = "-"
        if target is not None:
            if target >= now:
                reach = "reached"
            elif b_mel < 0:
                needed = 2 ** ((target - a_mel) / b_mel)
                reach = f"{needed:.3g}"
                if rate:
                    cpu_hours = f"{(needed - hours[-1]) / rate:.3g}"
            else:
                reach = "never (not falling)"
        lines.append(
            f"| {category} | {b_mel:+.4f} | {b_sdr:+.3f} | {now:.3f} | "
            f"{'-' if target is None else f'{target:.3f}'} | {reach} | {cpu_hours} |"
        )
    if rate:
        lines.append(
            f"\nCPU throughput of the last CPU slice ({cpu[-1]['machine']}): "
            f"{rate:.2f} audio hours per training hour"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=Path, default=Path("training/history.jsonl"))
    parser.add_argument("--kbps", type=float, default=6.0)
    parser.add_argument("--since", type=int, default=36314, help="first step of the fit")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="CATEGORY=MEL",
        help="a mel distance to predict the compute for, e.g. speech=0.538",
    )
    args = parser.parse_args()
    targets = {}
    for item in args.target:
        category, _, value = item.partition("=")
        if category not in CATEGORIES or not value:
            parser.error(f"--target {item!r}: expected one of {', '.join(CATEGORIES)}=MEL")
        targets[category] = float(value)
    slices = chain(read_history(args.history))
    print(curve_table(slices, args.kbps))
    print()
    print(predictions(slices, args.kbps, args.since, targets))


if __name__ == "__main__":
    main()
