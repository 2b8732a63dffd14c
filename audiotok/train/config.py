"""The training recipe as one JSON file: dataclasses for data, losses, optimiser and schedule.

A config file holds the sections below; every field has a default, so a file only states
what it changes. ``model`` is a :class:`~audiotok.codec.config.CodecConfig` as a dict.

Example (``configs/audiotok_24khz_cpu.json``, abridged)::

    {
      "model": {"sample_rate": 24000, "channels": 1, "causal": true, "n_filters": 16, ...},
      "data": {"manifest": "audio/manifest.tsv", "segment": 1.0, "batch_size": 8},
      "losses": {"adversarial": 0.0, "feature_matching": 0.0, "balancer": false, "l1": 100.0},
      "steps": 3800, "checkpoint_every": 250
    }
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codec.config import CodecConfig, unknown_fields
from ..codec.trainable import CodebookTraining


@dataclass(frozen=True)
class DataConfig:
    """Where training audio comes from and how crops are made.

    Attributes:
        manifest: A TSV manifest (``category source path sample_rate channels seconds``, paths
            relative to the manifest), as ``fetch-training-audio.sh`` writes it.
        validation_sources: Source packages held out for validation (never trained on).
        category_weights: Sampling probability of each category (renormalised over those
            present), so that 18 h of music don't drown 1.5 h of effects.
        segment: Crop length in seconds.
        batch_size: Crops per step.
        target_rms_db: Each crop's RMS is normalised to this level (dBFS) ...
        gain_jitter_db: ... plus a uniform random gain in +- this many dB.
        min_rms_db: Crops quieter than this are redrawn (up to a few times): silence teaches
            nothing.
        validation_items: Fixed validation crops (drawn once from the held-out sources).
    """

    manifest: str = ""
    validation_sources: tuple[str, ...] = ("festvox-ru", "supertuxkart-data", "warzone2100-music")
    category_weights: dict[str, float] = field(
        default_factory=lambda: {"speech": 0.4, "music": 0.4, "sfx": 0.2}
    )
    segment: float = 1.0
    batch_size: int = 8
    target_rms_db: float = -20.0
    gain_jitter_db: float = 6.0
    min_rms_db: float = -60.0
    validation_items: int = 48


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and discriminator settings.

    With the balancer the weights of the losses on the decoded audio are shares (it divides
    by their sum and normalises each gradient); without it they multiply the losses directly.

    Attributes:
        l1: Waveform L1.
        sisdr: Negative SI-SDR of the waveform (scale-invariant; unlike L1 its gradient does
            not vanish at the silent output an untrained decoder starts from).
        mel: Multi-scale mel-spectrogram loss.
        adversarial: Generator's hinge loss against the discriminator.
        feature_matching: L1 between discriminator features of real and decoded audio.
        commitment: Weight of the RVQ commitment loss (outside the balancer, as in EnCodec).
        balancer: Scale gradients by the weights above, whatever each loss's magnitude.
        balancer_total_norm: Norm of the balanced gradient (per batch item).
        balancer_ema: EMA decay of the per-loss gradient norms.
        disc_filters: Width of the first layer of each STFT discriminator.
        disc_ffts: FFT sizes of the multi-scale STFT discriminator.
        adversarial_start: Step at which the discriminator and its losses come in.
        disc_update_prob: Probability of a discriminator update at a step (EnCodec: 2/3).
    """

    l1: float = 0.1
    sisdr: float = 0.0
    mel: float = 2.0
    adversarial: float = 4.0
    feature_matching: float = 4.0
    commitment: float = 1.0
    balancer: bool = True
    balancer_total_norm: float = 1.0
    balancer_ema: float = 0.999
    disc_filters: int = 32
    disc_ffts: tuple[int, ...] = (1024, 2048, 512, 256, 128)
    adversarial_start: int = 0
    disc_update_prob: float = 2 / 3


@dataclass(frozen=True)
class OptimConfig:
    """Adam for codec and discriminator (EnCodec's betas), linear warm-up, cosine decay.

    Attributes:
        lr: Peak learning rate of the codec.
        disc_lr: Learning rate of the discriminator.
        betas: Adam betas.
        warmup_steps: Linear warm-up length.
        min_lr_ratio: Final learning rate as a share of the peak (cosine decay to ``steps``).
        grad_clip: Max gradient norm of the codec (0 to disable).
    """

    lr: float = 3e-4
    disc_lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """A whole training recipe.

    Attributes:
        model: The codec architecture.
        data: Training data.
        losses: Loss weights and discriminator.
        optim: Optimiser and schedule.
        codebooks: Codebook learning (EMA, dead codes).
        steps: Total training steps.
        seed: Seed of every random draw (data, dropout, restarts).
        threads: torch threads (0 keeps torch's default).
        log_every: Steps between JSON-lines log records.
        validate_every: Steps between validation passes (0: only at the end).
        checkpoint_every: Steps between checkpoints.
    """

    model: CodecConfig
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    codebooks: CodebookTraining = field(default_factory=CodebookTraining)
    steps: int = 10_000
    seed: int = 0
    threads: int = 0
    log_every: int = 50
    validate_every: int = 1000
    checkpoint_every: int = 500

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` rebuilds the config."""
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        return json.loads(json.dumps(data))  # tuples -> lists

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Builds a config from a dict (a parsed config file), rejecting unknown fields."""
        sections = {
            "data": DataConfig,
            "losses": LossConfig,
            "optim": OptimConfig,
            "codebooks": CodebookTraining,
        }
        _reject_unknown(cls, data, "config")
        kwargs = dict(data)
        if "model" not in kwargs:
            raise ValueError("config: the 'model' section is required")
        kwargs["model"] = CodecConfig.from_dict(kwargs["model"])
        for name, section in sections.items():
            if name in kwargs:
                _reject_unknown(section, kwargs[name], name)
                kwargs[name] = section(**_tuples(section, kwargs[name]))
        return cls(**kwargs)


def _reject_unknown(cls: type, data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    unknown = unknown_fields(cls, data)
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(unknown)}")


def _tuples(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """JSON lists -> tuples for the tuple-typed fields, keeping the dataclasses hashable."""
    tuple_fields = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
    return {k: tuple(v) if k in tuple_fields else v for k, v in data.items()}


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Reads a training config file (JSON); a relative manifest is taken from the file's folder.

    Raises:
        ValueError: Unreadable file or invalid config (the message says which field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON config ({exc})") from None
    try:
        config = TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    manifest = config.data.manifest
    if manifest and not Path(manifest).is_absolute():
        data_section = dataclasses.replace(config.data, manifest=str(path.parent / manifest))
        config = dataclasses.replace(config, data=data_section)
    return config
