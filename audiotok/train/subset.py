"""A compressed training subset: the data a training slice carries to a machine without it.

The full training audio (26 hours, 8 GB) can't travel to a lent GPU machine, so a slice there
trains on a subset made once here by :func:`make_subset`: snippets of the training split,
drawn deterministically from the manifest, normalised, resampled to the model's rate and
stored end to end in one Ogg Opus file per category, plus the fixed validation crops (from
the held-out packages) as 16-bit FLAC, so that every machine validates on identical audio::

    SUBSET/subset.json          rate, bitrate, seed, every snippet (category, source, file,
                                start in the source, seconds, offset in the Opus stream),
                                validation categories
    SUBSET/music.opus ...       the snippets of each category, end to end
    SUBSET/validation.flac      the validation crops, end to end (each ``segment`` long)

:class:`~audiotok.train.clipbank.ClipBank` decodes it into memory (on the training device)
and draws crops from it. Made from the same manifest with the same arguments, the subset's
snippets are the same, and so is the decoded audio for the same libsndfile and libopus
(the Ogg stream's serial number is random).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..runtime.files import atomic_path
from .config import DataConfig
from .data import AudioItem, CropSampler, normalise, read_crop, split_by_source

SUBSET_INFO = "subset.json"
VALIDATION_FILE = "validation.flac"
# Random stream of the snippet draws, apart from every training step's and the validation's.
SUBSET_STREAM = 1 << 29


@dataclass(frozen=True)
class SubsetPlan:
    """How much of each category a subset holds.

    Attributes:
        seconds: Category -> seconds of snippets (the Opus files' total length).
        snippet: Longest snippet, seconds (shorter files give whole-file snippets).
        bitrate: Opus bitrate in bits per second (mono).
        level_db: Each snippet is normalised to this RMS (dBFS) before encoding, so quiet
            recordings keep their detail through Opus; crops are normalised again anyway.
        min_rms_db: Snippets quieter than this are redrawn.
    """

    seconds: dict[str, float]
    snippet: float = 6.0
    bitrate: int = 32_000
    level_db: float = -20.0
    min_rms_db: float = -50.0


DEFAULT_PLAN = SubsetPlan({"speech": 2000.0, "music": 2800.0, "sfx": 1200.0})


def _draw_snippets(
    items: list[AudioItem], seconds: float, plan: SubsetPlan, rate: int, rng: np.random.Generator
) -> tuple[list[dict], list[np.ndarray]]:
    """Snippets of ``items`` (one category) up to ``seconds`` in all, files drawn by duration."""
    durations = np.array([max(it.seconds, 1e-3) for it in items])
    probs = durations / durations.sum()
    records, audio, total = [], [], 0.0
    while total < seconds:
        for _ in range(10):
            item = items[rng.choice(len(items), p=probs)]
            length = min(plan.snippet, item.seconds, seconds - total + 0.5)
            start = float(rng.uniform(0.0, max(0.0, item.seconds - length)))
            x = read_crop(item, start, length, rate)
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
            if rms > 10 ** (plan.min_rms_db / 20) and x.size >= rate // 10:
                break
        else:
            continue  # ten quiet draws in a row: try again from a new file
        records.append(
            {
                "source": item.source,
                "file": str(item.path),
                "start": round(start, 3),
                "samples": int(x.size),
            }
        )
        audio.append(normalise(x, plan.level_db))
        total += x.size / rate
    return records, audio


def _encode_opus(x: np.ndarray, rate: int, bitrate: int, path: Path) -> None:
    """Mono float32 ``x`` -> Ogg Opus at ``path``, about ``bitrate`` bits per second.

    libsndfile (inside the soundfile wheel) maps its compression level linearly onto
    Opus bitrates from 256 kbps (level 0) down to 6 kbps (level 1), per channel.
    """
    level = min(1.0, max(0.0, (256_000 - bitrate) / (256_000 - 6_000)))
    sf.write(path, x, rate, format="OGG", subtype="OPUS", compression_level=level)


def make_subset(
    items: list[AudioItem],
    out_dir: str | Path,
    data: DataConfig,
    sample_rate: int,
    seed: int = 0,
    plan: SubsetPlan = DEFAULT_PLAN,
) -> Path:
    """Writes a training subset of the manifest ``items`` to ``out_dir``; returns its info file.

    Args:
        items: Every file of the manifest; ``data.validation_sources`` are held out of the
            snippets and give the validation crops.
        out_dir: The subset's folder (created; files in it are replaced).
        data: Validation sources, crop length and levels, validation crop count.
        sample_rate: The model's rate.
        seed: Seed of the snippet draws and of the validation crops (the training seed).
        plan: Seconds per category, snippet length, bitrate.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, valid = split_by_source(items, data.validation_sources)
    by_category: dict[str, list[AudioItem]] = {}
    for item in train:
        by_category.setdefault(item.category, []).append(item)
    info: dict = {
        "sample_rate": sample_rate, "bitrate": plan.bitrate, "seed": seed,
        "snippet_seconds": plan.snippet, "level_db": plan.level_db, "categories": {},
    }  # fmt: skip
    for category in sorted(by_category):
        seconds = plan.seconds.get(category, 0.0)
        if seconds <= 0:
            continue
        rng = np.random.default_rng([seed, SUBSET_STREAM, sorted(by_category).index(category)])
        records, audio = _draw_snippets(by_category[category], seconds, plan, sample_rate, rng)
        offset = 0
        for record in records:
            record["offset"] = offset
            offset += record["samples"]
        name = f"{category}.opus"
        with atomic_path(out / name, overwrite=True) as tmp:
            _encode_opus(np.concatenate(audio), sample_rate, plan.bitrate, tmp)
        info["categories"][category] = {"file": name, "samples": offset, "snippets": records}
    if valid:
        crops, categories = CropSampler(valid, data, sample_rate, seed).fixed_set(
            data.validation_items
        )
        with atomic_path(out / VALIDATION_FILE, overwrite=True) as tmp:
            sf.write(tmp, crops.reshape(-1).numpy(), sample_rate, subtype="PCM_16", format="FLAC")
        info["validation"] = {
            "file": VALIDATION_FILE, "samples": crops.shape[-1], "categories": categories,
        }  # fmt: skip
    path = out / SUBSET_INFO
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return path


def read_subset_info(subset_dir: str | Path) -> dict:
    """The parsed ``subset.json`` of a subset folder.

    Raises:
        ValueError: No readable subset there.
    """
    path = Path(subset_dir) / SUBSET_INFO
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{subset_dir}: not a training subset ({exc})") from None
