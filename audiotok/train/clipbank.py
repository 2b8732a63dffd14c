"""Training crops drawn from a decoded subset held in memory on the training device.

:class:`~audiotok.train.data.CropSampler` reads every crop from its file and resamples it:
fine for a few crops a second on a CPU, far too slow to feed a GPU. :class:`ClipBank`
decodes a subset (:mod:`.subset`) once, keeps each category's snippets end to end as one
float32 tensor on the device, and cuts a batch with one gather.

As with the crop sampler, batch ``step`` is a pure function of ``(seed, step)``: categories,
snippets, offsets and gains come from ``numpy.random.default_rng([seed, step])``, so a run
resumed on any machine sees the batches an uninterrupted run would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from .config import DataConfig
from .data import CropSampler, augment, checked_manifest
from .subset import read_subset_info

# Candidates per crop: the first loud enough is used, as the crop sampler's redraws.
_CANDIDATES = 4


class ClipBank:
    """Seeded crops of a training subset, cut on ``device``.

    Args:
        subset_dir: A folder written by :func:`~audiotok.train.subset.make_subset`.
        config: Crop length, batch size, levels and category weights.
        sample_rate: The model's rate (must be the subset's).
        seed: Base seed; batch ``step`` is drawn from ``(seed, step)``.
        device: Where the decoded audio lives and batches are cut.
    """

    def __init__(
        self,
        subset_dir: str | Path,
        config: DataConfig,
        sample_rate: int,
        seed: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.dir, self.config, self.seed = Path(subset_dir), config, seed
        self.device = torch.device(device)
        self.info = read_subset_info(self.dir)
        if self.info["sample_rate"] != sample_rate:
            raise ValueError(
                f"{self.dir}: subset at {self.info['sample_rate']} Hz, model at {sample_rate} Hz"
            )
        self.sample_rate = sample_rate
        self.length = round(config.segment * sample_rate)
        self.categories = sorted(self.info["categories"])
        weights = np.array([config.category_weights.get(c, 0.0) for c in self.categories])
        if weights.sum() <= 0:
            weights = np.ones(len(self.categories))
        self.category_probs = weights / weights.sum()
        self.audio: dict[str, Tensor] = {}
        self.snippets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for category in self.categories:
            entry = self.info["categories"][category]
            audio = self._read(entry["file"])
            # Room for a crop past the end of the last snippet: zeros, as short files pad.
            padded = np.concatenate([audio, np.zeros(self.length, np.float32)])
            self.audio[category] = torch.from_numpy(padded).to(self.device)
            offsets = np.array([s["offset"] for s in entry["snippets"]], dtype=np.int64)
            lengths = np.array([s["samples"] for s in entry["snippets"]], dtype=np.int64)
            self.snippets[category] = (offsets, lengths, lengths / lengths.sum())

    def _read(self, name: str) -> np.ndarray:
        path = self.dir / name
        try:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.SoundFileError, OSError) as exc:
            raise ValueError(f"{path}: not readable audio ({exc})") from None
        if rate != self.sample_rate:
            raise ValueError(f"{path}: {rate} Hz, expected {self.sample_rate} Hz")
        return audio.mean(axis=1)

    def _starts(self, rng: np.random.Generator, category: str) -> np.ndarray:
        """Start samples of ``_CANDIDATES`` crops of ``category``, snippets drawn by length."""
        offsets, lengths, probs = self.snippets[category]
        chosen = rng.choice(len(offsets), size=_CANDIDATES, p=probs)
        room = np.maximum(lengths[chosen] - self.length, 0)
        return offsets[chosen] + np.floor(rng.uniform(0.0, 1.0, _CANDIDATES) * room).astype(
            np.int64
        )

    def batch(self, step: int) -> Tensor:
        """The training batch of ``step``: ``[batch_size, 1, T]`` on the bank's device."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, step])
        crops, gains_db = [], []
        for _ in range(cfg.batch_size):
            category = self.categories[rng.choice(len(self.categories), p=self.category_probs)]
            starts = torch.from_numpy(self._starts(rng, category)).to(self.device)
            index = starts[:, None] + torch.arange(self.length, device=self.device)
            crops.append(self.audio[category][index])  # [candidates, T]
            gains_db.append(rng.uniform(-cfg.gain_jitter_db, cfg.gain_jitter_db))
        x = torch.stack(crops)  # [B, candidates, T]
        rms = x.square().mean(dim=-1).sqrt()
        loud = rms > 10 ** (cfg.min_rms_db / 20)
        # The first loud candidate, or the last when none is (argmax of the first True).
        pick = torch.where(loud.any(dim=1), loud.int().argmax(dim=1), _CANDIDATES - 1)
        rows = torch.arange(x.shape[0], device=self.device)
        x, rms = x[rows, pick], rms[rows, pick]
        target = 10 ** ((cfg.target_rms_db + torch.tensor(gains_db, device=self.device)) / 20)
        gain = torch.where(rms > 0, target / rms.clamp(min=1e-12), torch.ones_like(rms))
        peak = x.abs().amax(dim=-1) * gain
        gain = torch.where(peak > 0.99, gain * 0.99 / peak.clamp(min=1e-12), gain)
        x = (x * gain[:, None])[:, None].float()
        return augment(x, cfg, self.sample_rate, self.seed, step)

    def fixed_set(self, count: int | None = None) -> tuple[Tensor, list[str]]:
        """The subset's validation crops ``[N, 1, T]`` (on the device) and their categories.

        Raises:
            ValueError: The subset holds no validation crops.
        """
        validation = self.info.get("validation")
        if not validation:
            raise ValueError(f"{self.dir}: the subset holds no validation crops")
        audio = self._read(validation["file"])
        categories, length = list(validation["categories"]), int(validation["samples"])
        x = torch.from_numpy(audio[: len(categories) * length].copy())
        x = x.view(len(categories), 1, length)
        if count is not None:
            x, categories = x[:count], categories[:count]
        return x.to(self.device), categories


def training_samplers(
    data: DataConfig, rate: int, seed: int, device: torch.device
) -> tuple[ClipBank | CropSampler, ClipBank | CropSampler | None]:
    """Training and validation crops: from the subset if the config names one, else from the
    manifest (its files checked and split first: :func:`~.data.checked_manifest`)."""
    if data.subset:
        bank = ClipBank(data.subset, data, rate, seed, device)
        return bank, (bank if bank.info.get("validation") else None)
    if not data.manifest:
        raise ValueError("config: neither data.manifest nor data.subset is set")
    train, valid = checked_manifest(data)
    valid_sampler = CropSampler(valid, data, rate, seed) if valid else None
    return CropSampler(train, data, rate, seed), valid_sampler
