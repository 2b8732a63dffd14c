"""The training recipe as one JSON file: dataclasses for data, losses, optimiser and schedule.

A config file holds the sections below; every field has a default, so a file only states
what it changes. ``model`` is a :class:`~audiotok.codec.config.CodecConfig` as a dict.

Example (``configs/audiotok_24khz.json``, abridged)::

    {
      "model": {"sample_rate": 24000, "channels": 1, "causal": true, "n_filters": 16, ...},
      "data": {"subset": "../training/subset", "segment": 1.0, "batch_size": 32},
      "losses": {"l1": 1.0, "mel": 2.0, "adversarial": 0.0, "feature_matching": 0.0},
      "steps": 300000, "checkpoint_every": 1000
    }
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..codec.config import (
    CodecConfig,
    InvalidCodecConfig,
    field_type_errors,
    unknown_fields,
    with_tuples,
)
from .trainable import CodebookTraining

# The training steps' precision: the dtype of the encoder's and decoder's autocast.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


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
        silence: Share of training crops in which a random span (10 to 50 %) is replaced by
            digital silence (:func:`~audiotok.train.data.silence_spans`), so that the codec
            learns to give silence back; 0 leaves crops as drawn.
        lowpass: Share of training crops low-passed at a recording's band limit (4, 8, 11
            or 16 kHz; :func:`~audiotok.train.data.band_limits`), so that the codec learns to
            keep empty bands empty; 0 leaves crops as drawn.
        validation_items: Fixed validation crops (drawn once from the held-out sources).
        subset: A training subset folder (:mod:`audiotok.train.subset`); when set, crops
            come from it, decoded into memory on the training device, and validation uses
            the crops stored in it (the same on every machine), not the manifest.
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
    silence: float = 0.0
    lowpass: float = 0.0
    validation_items: int = 48
    subset: str = ""


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and discriminator settings.

    With the balancer the weights of the losses on the decoded audio are shares (it divides
    by their sum and normalises each gradient); without it they multiply the losses directly.

    Attributes:
        l1: Waveform L1.
        sisdr: Negative SI-SDR of the waveform (scale-invariant; unlike L1 its gradient does
            not vanish at the silent output an untrained decoder starts from).
        mel: Multi-scale mel-spectrogram loss (:class:`~audiotok.train.losses.MultiScaleMelLoss`).
        mel_fft_range: Its FFT sizes, as powers of two: ``2**start`` up to ``2**(end - 1)``.
        mel_fmin: Its lowest mel frequency (Hz).
        mel_normalized: Window-normalised spectrograms, sum divided by its weights' total.
        mel_alphas: Weight its log terms by ``sqrt(2**i - 1)`` (audiocraft's ``alphas``).
        mel_floor: Added to its mel power before the logarithm (audiocraft: 1e-5). With
            window-normalised spectrograms 1e-5 hides what is ~60 dB below a full-scale tone, so
            noise a codec adds in an empty band (speech recorded at 8 or 16 kHz) costs nothing.
        logmel: DAC's multi-scale log-mel L1 (:class:`~audiotok.train.losses.LogMelL1Loss`),
            which sees that noise; 0 leaves it out (no cost).
        logmel_floor: Its clamp on mel magnitudes (DAC: 1e-5; :func:`mel_distance`'s clamp
            on power, 1e-5, is ``sqrt(1e-5)`` ~ 3.2e-3 in magnitude).
        adversarial: Generator's hinge loss against the discriminator.
        feature_matching: L1 between discriminator features of real and decoded audio.
        commitment: Weight of the RVQ commitment loss (outside the balancer, as in EnCodec).
        codebook: Weight of the codebook loss of factorised codes (``model.codebook_dim``),
            outside the balancer too. DAC's recipe weighs it 1 and the commitment 0.25, on
            losses summed over its codebooks; ours are averaged over the stages, so the same
            weights are ``n_q`` times weaker than DAC's.
        balancer: Scale gradients by the weights above, whatever each loss's magnitude.
        balancer_total_norm: Norm of the balanced gradient (per batch item).
        balancer_ema: EMA decay of the per-loss gradient norms.
        disc_filters: Width of the first layer of each STFT discriminator.
        disc_filters_scale: Width growth per discriminator layer (1: constant width).
        disc_ffts: FFT sizes of the multi-scale STFT discriminator.
        adversarial_start: Step at which the discriminator and its losses come in.
        disc_update_prob: Probability of a discriminator update at a step (EnCodec: 2/3).
        disc_items: Items of each batch the discriminator sees, for its update and for the
            adversarial and feature-matching losses (0: all, as EnCodec). On the whole
            batch its 2-D convolutions over five spectrograms cost ~9x a reconstruction step
            on a CPU, in bf16; 4 items of 0.5 s of a batch of 16 crops of 1 s, 1.8x.
        disc_seconds: Length of the window of those items it sees, at a random position
            drawn per step (0: the whole crop).
    """

    l1: float = 0.1
    sisdr: float = 0.0
    mel: float = 2.0
    logmel: float = 0.0
    logmel_floor: float = 1e-5
    adversarial: float = 4.0
    feature_matching: float = 4.0
    commitment: float = 1.0
    codebook: float = 1.0
    balancer: bool = True
    balancer_total_norm: float = 1.0
    balancer_ema: float = 0.999
    mel_fft_range: tuple[int, int] = (6, 11)
    mel_fmin: float = 64.0
    mel_normalized: bool = True
    mel_alphas: bool = False
    mel_floor: float = 1e-5
    disc_filters: int = 32
    disc_filters_scale: int = 1
    disc_ffts: tuple[int, ...] = (1024, 2048, 512, 256, 128)
    adversarial_start: int = 0
    disc_update_prob: float = 2 / 3
    disc_items: int = 0
    disc_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.disc_items < 0 or self.disc_seconds < 0:
            raise ValueError("losses.disc_items and losses.disc_seconds must be 0 or more")


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
        rewarm_steps: After a resume without optimiser moments (a compact state), the
            learning rate ramps up again over this many steps while Adam re-estimates them.
        ema_decay: Per-step decay of an exponential moving average of the codec's weights
            (0: none), kept beside them: validation reports both, export can take either.
            The codebooks are not averaged again (they are EMA already): the averaged
            weights are validated and exported with the live codebooks.
    """

    lr: float = 3e-4
    disc_lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    rewarm_steps: int = 100
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in [0, 1), not {self.ema_decay}")


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
        precision: ``fp32``, or ``bf16``: training steps run the encoder and decoder under
            bfloat16 autocast (weights, quantizer, losses and validation stay float32). On a
            2-core Intel Xeon VM with AMX a step took 0.68 of fp32's time
            (``benchmarks/train_step_bench.py``).
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
    precision: str = "fp32"
    log_every: int = 50
    validate_every: int = 1000
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )
        data, losses, optim = self.data, self.losses, self.optim
        checks = {
            "steps, seed and threads must be >= 0": min(self.steps, self.seed, self.threads) >= 0,
            "log_every and checkpoint_every must be >= 1, validate_every >= 0": (
                min(self.log_every, self.checkpoint_every) >= 1 and self.validate_every >= 0
            ),
            "data.batch_size and data.validation_items must be >= 1": (
                min(data.batch_size, data.validation_items) >= 1
            ),
            "data.segment must be > 0": data.segment > 0,
            "data.category_weights must be >= 0": min(data.category_weights.values(), default=0)
            >= 0,
            "losses.disc_update_prob must be in [0, 1]": 0 <= losses.disc_update_prob <= 1,
            "losses.mel_fft_range must be (start, end) with start < end": (
                len(losses.mel_fft_range) == 2 and losses.mel_fft_range[0] < losses.mel_fft_range[1]
            ),
            "optim.betas must be two numbers in [0, 1)": (
                len(optim.betas) == 2 and all(0 <= b < 1 for b in optim.betas)
            ),
            "optim.lr and optim.disc_lr must be > 0": min(optim.lr, optim.disc_lr) > 0,
        }
        failed = [what for what, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype of the training steps' autocast, or None (float32 throughout)."""
        return PRECISIONS[self.precision]

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
        _reject_unknown(CodecConfig, kwargs["model"], "model")
        errors = field_type_errors(CodecConfig, kwargs["model"], "model.")
        errors += field_type_errors(cls, data)
        for name, section in sections.items():
            if name in kwargs:
                _reject_unknown(section, kwargs[name], name)
                errors += field_type_errors(section, kwargs[name], f"{name}.")
        if errors:  # before any is built: a wrong type fails deep inside torch otherwise
            raise ValueError(errors[0])
        try:
            kwargs["model"] = CodecConfig.from_dict(kwargs["model"])
        except InvalidCodecConfig as exc:  # named as the overrides name them: model.n_q
            raise ValueError("; ".join(f"model.{p}" for p in exc.problems)) from None
        for name, section in sections.items():
            if name in kwargs:
                kwargs[name] = section(**with_tuples(section, kwargs[name]))
        return cls(**kwargs)


def _reject_unknown(cls: type, data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    unknown = unknown_fields(cls, data)
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(unknown)}")


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Sets ``section.field=VALUE`` (VALUE as JSON, else as a string) in a parsed config.

    Example: ``apply_override(data, "losses.adversarial_start=2000")``.

    Raises:
        ValueError: No ``=`` or no key.
    """
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {assignment!r}: expected KEY=VALUE, e.g. optim.lr=0.001")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    *sections, name = key.strip().split(".")
    target = data
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ValueError(f"override {assignment!r}: {section} is not a section")
    target[name] = value


def load_config(path: str | os.PathLike, overrides: tuple[str, ...] = ()) -> TrainConfig:
    """Reads a training config file (JSON); relative data paths are taken from its folder.

    Args:
        path: The JSON file.
        overrides: ``section.field=VALUE`` assignments applied on top (see
            :func:`apply_override`); unknown fields are errors as in the file.

    Raises:
        ValueError: Unreadable file or invalid config (the message says which field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        config = TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    # Relative data paths are taken from the config file's folder.
    data_paths = {}
    for name in ("manifest", "subset"):
        value = getattr(config.data, name)
        if value and not Path(value).is_absolute():
            data_paths[name] = os.path.normpath(path.parent / value)
    if data_paths:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, **data_paths))
    return config
