"""benchmarks/training_curve.py: the chain walk through the history and the log-linear fit."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location(
    "training_curve", ROOT / "benchmarks" / "training_curve.py"
)
curve = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(curve)


def line(start: int, end: int, hours: float, speech_mel: float, device: str = "cpu") -> dict:
    return {
        "date": "2026-12-07T00:00:00+00:00",
        "device": device,
        "machine": "test",
        "steps": [start, end],
        "audio_seconds": 3600.0,
        "train_seconds": 1800.0,
        "totals": {"audio_seconds": hours * 3600},
        "validation_averaged": {"6kbps/speech": {"mel_distance": speech_mel, "si_sdr": 8.0}},
    }


def test_chain_takes_the_adopted_arm() -> None:
    history = [
        line(0, 10, 1, 0.9),
        line(10, 20, 2, 0.8),  # arm A, beaten
        line(10, 21, 2, 0.7),  # arm B, adopted: appended after A
        line(21, 30, 4, 0.6),
    ]
    assert [s["steps"] for s in curve.chain(history)] == [[0, 10], [10, 21], [21, 30]]


def test_the_committed_history_is_one_chain(tmp_path: Path) -> None:
    slices = curve.chain(curve.read_history(ROOT / "training" / "history.jsonl"))
    assert slices[0]["steps"][0] == 0
    for before, after in itertools.pairwise(slices):
        assert before["steps"][1] == after["steps"][0]
        assert before["totals"]["audio_seconds"] < after["totals"]["audio_seconds"]


def test_fit_predicts_the_audio_a_target_needs(tmp_path: Path) -> None:
    # mel = 1.0 - 0.1 log2(hours): 0.5 is reached at 32 hours; 8 h done at 2 audio h per
    # training hour leaves 12 training hours.
    history = [
        line(0, 10 * (i + 1), h, 1.0 - 0.1 * math.log2(h)) for i, h in enumerate((1, 2, 4, 8))
    ]
    for i in range(1, 4):
        history[i]["steps"][0] = history[i - 1]["steps"][1]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(h) + "\n" for h in history))
    text = curve.predictions(curve.chain(curve.read_history(path)), 6.0, 0, {"speech": 0.5})
    row = next(r for r in text.splitlines() if r.startswith("| speech"))
    assert row.strip("| ").split(" | ")[1:] == ["-0.1000", "+0.000", "0.700", "0.500", "32", "12"]
