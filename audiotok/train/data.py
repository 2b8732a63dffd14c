"""Training audio: a manifest, a split held out by source package, and seeded random crops.

The manifest is the TSV that ``fetch-training-audio.sh`` writes, one file a row::

    category  source      path                        sample_rate  channels  seconds
    speech    festvox-ru  src/festvox-ru/.../ru_1.wav  16000        1         16.08

Validation holds out whole *source packages*, not random files: files of one package share
speakers, instruments and recording chains, and a random split would leak them.

A batch is a pure function of ``(seed, step)``: each crop's category, file, offset and gain
are drawn from a generator seeded by both. Resuming at step ``n`` therefore sees exactly the
batches an uninterrupted run would, with no sampler state to save.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from ..errors import first_line
from .config import DataConfig

# A crop as quiet as this after several draws is used anyway (a silent file, say).
_REDRAWS = 4

# Random streams beyond any training step (steps count up from 0), so that the batches used
# to initialise the model, to count entropy priors and to validate never repeat a training one.
INIT_STREAM = 1 << 31
PRIORS_STREAM = 1 << 30  # + batch index
VALIDATION_STREAM = 0xFFFFFFFF
# Third words of the seeds of a step's silence spans and band limits: streams of their own, so
# turning either on leaves every other draw of the batch as it was.
SILENCE_STREAM = 1
LOWPASS_STREAM = 2
# Band limits of recordings a codec meets: sampled at 8, 16, 22.05 and 32 kHz.
LOWPASS_CUTOFFS = (4000.0, 8000.0, 11025.0, 16000.0)


def silence_spans(
    x: torch.Tensor, share: float, sample_rate: int, seed: int, step: int
) -> torch.Tensor:
    """Digital silence over a random span of a ``share`` of the crops ``x`` ``[B, 1, T]``.

    Training crops are redrawn when quiet (``min_rms_db``), so without this a codec never
    sees silence and never learns to give it back: the defaults trained without it decode
    digital silence to a buzz at -65 to -71 dBFS, harmonics of their 75 Hz frame rate. Each
    chosen crop
    loses 10 to 50 % of its length at a random place; the gain falls to 0 over the span's
    first 5 ms and rises back over its last 5 ms. Draws come from ``(seed, step,
    SILENCE_STREAM)``, a fixed number per crop.

    Example (``share`` 0.5, 4 crops of 1 s): crops 1 and 3, say, fall silent from 0.31 to
    0.62 s and from 0.05 to 0.20 s; crops 0 and 2 are unchanged.
    """
    if share <= 0:
        return x
    batch, length = x.shape[0], x.shape[-1]
    rng = np.random.default_rng([seed, step, SILENCE_STREAM])
    chosen = rng.uniform(size=batch) < share
    spans = np.floor(rng.uniform(0.1, 0.5, size=batch) * length).astype(np.int64)
    starts = np.floor(rng.uniform(size=batch) * (length - spans + 1)).astype(np.int64)
    fade = max(1, round(0.005 * sample_rate))
    t = np.arange(length)[None]
    # Distance from the nearer edge of the span (inside it; negative outside) -> gain.
    inside = np.minimum(t - starts[:, None], starts[:, None] + spans[:, None] - 1 - t)
    gain = np.clip(1.0 - (inside + 1) / fade, 0.0, 1.0)
    gain[~chosen] = 1.0
    return x * torch.from_numpy(gain.astype(np.float32)).to(x.device)[:, None]


@dataclass(frozen=True)
class AudioItem:
    """One file of the manifest."""

    category: str
    source: str
    path: Path
    sample_rate: int
    channels: int
    seconds: float


def read_manifest(path: str | Path) -> list[AudioItem]:
    """Reads a manifest; paths in it are relative to its folder.

    Raises:
        ValueError: Missing file, missing columns or a malformed row (with its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such manifest")
    items = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        needed = {"category", "source", "path", "sample_rate", "channels", "seconds"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise ValueError(f"{path}: a manifest needs the columns {', '.join(sorted(needed))}")
        for line, row in enumerate(reader, start=2):
            try:
                item = AudioItem(
                    row["category"],
                    row["source"],
                    path.parent / row["path"],
                    int(row["sample_rate"]),
                    int(row["channels"]),
                    float(row["seconds"]),
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: malformed row ({exc})") from None
            if not (
                item.sample_rate > 0 and item.channels > 0 and 0 <= item.seconds < math.inf
            ):  # nan and inf would surface later as "probabilities contain NaN"
                raise ValueError(
                    f"{path}:{line}: sample_rate and channels must be > 0 and seconds finite"
                    " and >= 0"
                )
            items.append(item)
    if not items:
        raise ValueError(f"{path}: the manifest lists no files")
    return items


def checked_manifest(config: DataConfig) -> tuple[list[AudioItem], list[AudioItem]]:
    """``config.manifest``'s (training, validation) files (:func:`split_by_source`), every one
    present: found now, not hours into a run when a batch first draws it. A warning names
    training categories the weights leave out (a renamed one's files would never be drawn)."""
    items = read_manifest(config.manifest)
    missing = [it.path for it in items if not it.path.is_file()]
    if missing:
        raise ValueError(f"{config.manifest}: {len(missing)} listed files missing: {missing[0]}")
    train, valid = split_by_source(items, config.validation_sources)
    unweighted = sorted({it.category for it in train} - set(config.category_weights))
    if config.category_weights and unweighted:
        warnings.warn(
            f"{config.manifest}: categories {', '.join(unweighted)} have no "
            "data.category_weights entry: their files are never drawn",
            stacklevel=2,
        )
    return train, valid


def split_by_source(
    items: list[AudioItem], validation_sources: tuple[str, ...]
) -> tuple[list[AudioItem], list[AudioItem]]:
    """(training, validation): validation is every file of the held-out source packages."""
    held_out = set(validation_sources)
    train = [it for it in items if it.source not in held_out]
    valid = [it for it in items if it.source in held_out]
    return train, valid


def read_crop(item: AudioItem, start: float, seconds: float, sample_rate: int) -> np.ndarray:
    """``seconds`` of ``item`` from ``start`` (s), mono, resampled, zero-padded: ``[T]`` float32.

    Raises:
        ValueError: The file is missing or not readable audio (the message names it).
    """
    length = round(seconds * sample_rate)
    try:
        with sf.SoundFile(str(item.path)) as f:
            first = min(int(start * f.samplerate), max(0, f.frames - 1))
            f.seek(first)
            wanted = math.ceil(seconds * f.samplerate) + 1
            data = f.read(wanted, dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.SoundFileError, OSError) as exc:
        reason = first_line(exc)
        raise ValueError(f"{item.path}: not readable audio ({reason})") from None
    mono = data.mean(axis=1)
    if rate != sample_rate and mono.size:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    out = np.zeros(length, dtype=np.float32)
    out[: min(length, mono.size)] = mono[:length]
    return out


def normalise(x: np.ndarray, target_db: float) -> np.ndarray:
    """Scales ``x`` to an RMS of ``target_db`` dBFS, backing off so no sample clips."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms <= 0:
        return x
    gain = 10 ** (target_db / 20) / rms
    peak = float(np.abs(x).max()) * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    return (x * gain).astype(np.float32)


def band_limits(
    x: torch.Tensor, share: float, sample_rate: int, seed: int, step: int
) -> torch.Tensor:
    """A ``share`` of the crops ``x`` ``[B, 1, T]`` low-passed at a recording's band limit.

    Much real audio holds nothing above 4, 8 or 11 kHz (telephone and 16 kHz speech, old
    games' 22 kHz samples); a codec should keep those bands empty, not fill them with noise
    (the default fills the validation speech's, which is 16 kHz material: most of its mel
    distance). Each chosen crop keeps its spectrum below a cutoff drawn from
    :data:`LOWPASS_CUTOFFS` (those at or above the Nyquist frequency leave it as it is) with
    a 200 Hz raised-cosine edge, filtered in one FFT of the crop. Draws come from ``(seed,
    step, LOWPASS_STREAM)``, two per crop.
    """
    if share <= 0:
        return x
    batch, length = x.shape[0], x.shape[-1]
    rng = np.random.default_rng([seed, step, LOWPASS_STREAM])
    chosen = rng.uniform(size=batch) < share
    cutoffs = np.array(LOWPASS_CUTOFFS)[rng.integers(len(LOWPASS_CUTOFFS), size=batch)]
    rows = [i for i in np.flatnonzero(chosen) if cutoffs[i] < sample_rate / 2]
    if not rows:
        return x
    freqs = torch.fft.rfftfreq(length, 1 / sample_rate, device=x.device)
    edge = torch.as_tensor(cutoffs[rows], dtype=freqs.dtype, device=x.device)[:, None]
    # 1 below cutoff - 200 Hz, 0 above the cutoff, a half cosine between.
    ramp = ((edge - freqs) / 200.0).clamp(0.0, 1.0)
    response = 0.5 - 0.5 * torch.cos(torch.pi * ramp)
    x = x.clone()
    spectrum = torch.fft.rfft(x[rows, 0].double(), dim=-1) * response
    x[rows, 0] = torch.fft.irfft(spectrum, n=length, dim=-1).to(x.dtype)
    return x


def augment(
    x: torch.Tensor, config: DataConfig, sample_rate: int, seed: int, step: int
) -> torch.Tensor:
    """Batch ``step``'s crops ``[B, 1, T]`` after the config's augmentations, in the same
    order for every sampler: band limits (``lowpass``), then silence spans (``silence``)."""
    x = band_limits(x, config.lowpass, sample_rate, seed, step)
    return silence_spans(x, config.silence, sample_rate, seed, step)


class CropSampler:
    """Seeded random crops of a list of files, balanced across categories.

    Args:
        items: The files to draw from.
        config: Crop length, batch size, levels and category weights.
        sample_rate: The model's rate.
        seed: Base seed; batch ``step`` is drawn from ``(seed, step)``.
    """

    def __init__(
        self, items: list[AudioItem], config: DataConfig, sample_rate: int, seed: int
    ) -> None:
        if not items:
            raise ValueError("no audio to draw crops from")
        self.config, self.sample_rate, self.seed = config, sample_rate, seed
        by_category: dict[str, list[AudioItem]] = defaultdict(list)
        for it in items:
            by_category[it.category].append(it)
        self.categories = sorted(by_category)
        weights = np.array([config.category_weights.get(c, 0.0) for c in self.categories])
        if weights.sum() <= 0:
            weights = np.ones(len(self.categories))
        self.category_probs = weights / weights.sum()
        # Within a category a file is drawn in proportion to its duration: every second of
        # audio is equally likely.
        self.files = {c: by_category[c] for c in self.categories}
        self.file_probs = {}
        for c, files in self.files.items():
            seconds = np.array([max(f.seconds, 1e-3) for f in files])
            self.file_probs[c] = seconds / seconds.sum()

    def crop(self, rng: np.random.Generator, category: str | None = None) -> np.ndarray:
        """One normalised crop ``[T]``, of ``category`` or of a category drawn by weight."""
        return self.crop_item(rng, category)[0]

    def crop_item(
        self, rng: np.random.Generator, category: str | None = None
    ) -> tuple[np.ndarray, AudioItem]:
        """:meth:`crop` and the file it was cut from."""
        cfg = self.config
        if category is None:
            category = self.categories[rng.choice(len(self.categories), p=self.category_probs)]
        files = self.files[category]
        x = np.zeros(round(cfg.segment * self.sample_rate), dtype=np.float32)
        for _ in range(_REDRAWS):
            item = files[rng.choice(len(files), p=self.file_probs[category])]
            start = rng.uniform(0.0, max(0.0, item.seconds - cfg.segment))
            x = read_crop(item, start, cfg.segment, self.sample_rate)
            rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
            if rms > 10 ** (cfg.min_rms_db / 20):
                break
        gain = cfg.target_rms_db + rng.uniform(-cfg.gain_jitter_db, cfg.gain_jitter_db)
        return normalise(x, gain), item

    def batch(self, step: int) -> torch.Tensor:
        """The training batch of ``step``: ``[batch_size, 1, T]``."""
        rng = np.random.default_rng([self.seed, step])
        crops = [self.crop(rng) for _ in range(self.config.batch_size)]
        x = torch.from_numpy(np.stack(crops))[:, None]
        return augment(x, self.config, self.sample_rate, self.seed, step)

    def fixed_set(self, count: int) -> tuple[torch.Tensor, list[str]]:
        """``count`` crops spread evenly over the categories, the same on every call.

        Returns:
            Crops ``[count, 1, T]`` and the category of each.
        """
        crops, items = self.fixed_items(count)
        return crops, [item.category for item in items]

    def fixed_items(self, count: int) -> tuple[torch.Tensor, list[AudioItem]]:
        """:meth:`fixed_set` with the file of each crop instead of its category."""
        rng = np.random.default_rng([self.seed, VALIDATION_STREAM])
        categories = [self.categories[i % len(self.categories)] for i in range(count)]
        drawn = [self.crop_item(rng, c) for c in categories]
        crops = torch.from_numpy(np.stack([x for x, _ in drawn]))[:, None]
        return crops, [item for _, item in drawn]
