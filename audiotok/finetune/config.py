"""The fine-tuning recipe: one YAML or JSON file, every key with a default but ``base`` and
``data.train``. docs/FINETUNING.md documents each key; a key not known here is an error.

Example (YAML)::

    base: musicgen-small               # registry name, Hugging Face id, or a local checkpoint
    data: {train: tokens/, segment_seconds: 10, batch_size: 4, accumulate: 4}
    optim: {lr: 1.0e-5, warmup_steps: 100}
    steps: 2000
    lora: {rank: 16}
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codec.config import field_type_errors, unknown_fields, with_tuples
from ..errors import AudiotokError, first_line

PRECISIONS = ("auto", "fp32", "bf16")
EXPORT_FORMATS = ("audiotok", "audiocraft")


class FinetuneError(AudiotokError, ValueError):
    """A recipe, dataset or run directory that fine-tuning can't use (one line)."""


@dataclass(frozen=True)
class DataConfig:
    """Where the tokens come from and how batches are cut.

    Attributes:
        train: A captioned token dataset (``audiotok encode`` with the model's codec).
        valid: A second dataset for validation; empty: ``valid_fraction`` of ``train``.
        valid_fraction: Share of ``train``'s files held out when ``valid`` is empty (every
            n-th file, at least one).
        segment_seconds: Length of a training crop; 0: the model's ``segment_duration``.
        batch_size: Crops per micro-batch.
        accumulate: Micro-batches per optimiser step (gradient accumulation).
        valid_items: Validation crops at most (each held-out file's first segment).
    """

    train: str = ""
    valid: str = ""
    valid_fraction: float = 0.1
    segment_seconds: float = 0.0
    batch_size: int = 4
    accumulate: int = 1
    valid_items: int = 64


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay.

    Attributes:
        lr: Peak learning rate.
        betas: Adam's betas.
        eps: Adam's epsilon.
        weight_decay: Decoupled weight decay (AdamW).
        warmup_steps: Linear ramp to ``lr``: step ``i`` (1-based) of them at
            ``lr * i / warmup_steps``, the last at ``lr``.
        min_lr_ratio: The cosine decays from ``lr`` to ``lr * min_lr_ratio``, the rate of
            the run's last step (step ``steps``).
        max_norm: Gradient clipping by global norm (0: none).
    """

    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    max_norm: float = 1.0


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters (peft) instead of (or on top of) training whole layers.

    Attributes:
        rank: Adapter rank; 0 turns LoRA off.
        alpha: Scale numerator (the update is ``alpha / rank * B A``).
        dropout: Dropout on the adapters' input.
        targets: Linear modules that get adapters, by the last part of their name:
            ``out_proj`` (self- and cross-attention outputs), ``linear1``, ``linear2``
            (feed-forward). The output heads ``linears.{k}`` (named by index) are not
            targets; train them with ``train_layers``.
    """

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("out_proj", "linear1", "linear2")


@dataclass(frozen=True)
class ExportConfig:
    """What the finished run writes to ``RUN/export/``.

    Attributes:
        formats: ``audiotok`` (safetensors + JSON) and/or ``audiocraft``
            (``state_dict.bin`` + ``compression_state_dict.bin``).
        bundle_text_encoder: Store the T5 encoder in the audiotok export (self-contained,
            offline); else it is fetched by name like an audiocraft export's.
        keep_adapter: With LoRA, also write the adapters apart (``export/lora/``, peft's
            ``adapter_model.safetensors`` + ``adapter_config.json``, and the other weights
            the run trained in ``trained.safetensors``). Exports always hold the merged
            weights.
    """

    formats: tuple[str, ...] = EXPORT_FORMATS
    bundle_text_encoder: bool = True
    keep_adapter: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    """The whole recipe.

    Attributes:
        base: The model to start from: a registry name (``musicgen-small``), a Hugging Face
            id, or a local audiocraft, transformers or audiotok checkpoint.
        text_encoder: A T5 directory or name for audiocraft checkpoints (as ``--text-encoder``).
        data: :class:`DataConfig`.
        optim: :class:`OptimConfig`.
        lora: :class:`LoraConfig`.
        export: :class:`ExportConfig`.
        steps: Optimiser steps of the whole run.
        cfg_dropout: Probability that a micro-batch's conditions are all replaced by the null
            condition (classifier-free guidance dropout, drawn once per batch as audiocraft's
            ``ClassifierFreeGuidanceDropout``).
        train_layers: Parameter-name prefixes to train (e.g. ``transformer.layers.23``,
            ``linears``, ``out_norm``); empty: the whole LM (or only the adapters with LoRA).
        train_projection: Also train the conditioners' ``output_proj`` (audiocraft trains
            it; T5 itself is always frozen).
        precision: ``bf16`` autocast, ``fp32``, or ``auto`` (bf16 on CUDA, fp32 elsewhere).
        seed: Seeds the weights' adapters, the crops and the dropout draws.
        log_every: Steps between lines of ``log.jsonl``.
        valid_every: Steps between validations (also at the end of every slice).
        checkpoint_every: Steps between checkpoints (also at the end of every slice).
    """

    base: str = ""
    text_encoder: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    steps: int = 1000
    cfg_dropout: float = 0.3
    train_layers: tuple[str, ...] = ()
    train_projection: bool = True
    precision: str = "auto"
    seed: int = 0
    log_every: int = 10
    valid_every: int = 100
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        problems = []
        if not self.base:
            problems.append("'base' (the model to fine-tune) is required")
        if not self.data.train:
            problems.append("'data.train' (a captioned token dataset) is required")
        if self.steps < 1:
            problems.append("steps must be at least 1")
        if self.data.batch_size < 1 or self.data.accumulate < 1:
            problems.append("data.batch_size and data.accumulate must be at least 1")
        if not 0 < self.data.valid_fraction < 1:
            problems.append("data.valid_fraction must be between 0 and 1")
        if self.data.segment_seconds < 0:
            problems.append("data.segment_seconds must be >= 0")
        if not 0 <= self.cfg_dropout <= 1:
            problems.append("cfg_dropout must be between 0 and 1")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.lora.rank < 0:
            problems.append("lora.rank must be >= 0")
        if self.optim.lr <= 0 or self.optim.warmup_steps < 0:
            problems.append("optim.lr must be > 0 and optim.warmup_steps >= 0")
        optim, lora = self.optim, self.lora
        if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
            problems.append("optim.betas must be two numbers in [0, 1)")
        if optim.eps <= 0 or optim.weight_decay < 0:
            problems.append("optim.eps must be > 0 and optim.weight_decay >= 0")
        if not 0 <= optim.min_lr_ratio <= 1:
            problems.append("optim.min_lr_ratio must be between 0 and 1")
        if optim.max_norm < 0:  # a negative bound would flip the gradients: training uphill
            problems.append("optim.max_norm must be >= 0 (0: no clipping)")
        if lora.alpha <= 0 or not 0 <= lora.dropout < 1:
            problems.append("lora.alpha must be > 0 and lora.dropout in [0, 1)")
        if self.data.valid_items < 1:
            problems.append("data.valid_items must be at least 1")
        bad = sorted(set(self.export.formats) - set(EXPORT_FORMATS))
        if bad:
            problems.append(f"export.formats: unknown {', '.join(bad)} ({EXPORT_FORMATS})")
        for name in ("log_every", "valid_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if problems:
            raise FinetuneError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` rebuilds the config."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Any) -> FinetuneConfig:
        """Builds a config from a parsed file.

        Raises:
            FinetuneError: Unknown keys, wrong types, invalid values (one line).
        """
        sections = {"data": DataConfig, "optim": OptimConfig, "lora": LoraConfig,
                    "export": ExportConfig}  # fmt: skip
        _reject_unknown(cls, data, "config")
        _check_types(cls, data, "")
        kwargs = with_tuples(cls, data)
        try:
            for name, section in sections.items():
                if name in kwargs:
                    _reject_unknown(section, kwargs[name], name)
                    _check_types(section, kwargs[name], f"{name}.")
                    kwargs[name] = section(**with_tuples(section, kwargs[name]))
            return cls(**kwargs)
        except TypeError as exc:
            raise FinetuneError(f"config: {exc}") from None


def _reject_unknown(cls: type, data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise FinetuneError(f"{where}: expected a mapping of keys to values")
    unknown = unknown_fields(cls, data)
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise FinetuneError(f"{where}: unknown key {', '.join(unknown)} (known: {known})")


def _check_types(cls: type, data: dict[str, Any], where: str) -> None:
    """Each value of ``data`` of its field's type (see ``field_type_errors``)."""
    errors = field_type_errors(cls, data, where)
    if errors:
        raise FinetuneError(errors[0])


def load_config(path: str | os.PathLike) -> FinetuneConfig:
    """Reads a recipe (``.yaml``/``.yml`` as YAML, anything else as JSON).

    Relative dataset and checkpoint paths are taken from the file's folder when they exist
    there, else from the working directory when they exist there, and made absolute, so
    that the run's recipe is the same from wherever it is resumed (``base`` may also be a
    registry name, kept as it is).

    Raises:
        FinetuneError: Unreadable file or invalid recipe (one line).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        reason = first_line(exc)
        raise FinetuneError(f"{path}: not a readable recipe ({reason})") from None
    try:
        config = FinetuneConfig.from_dict(data)
    except FinetuneError as exc:
        raise FinetuneError(f"{path}: {exc}") from None

    from ..zoo.lm_cards import find_generation_card

    def local(value: str) -> str:
        if not value or Path(value).is_absolute():
            return value
        if (path.parent / value).exists():
            return os.path.abspath(path.parent / value)
        if Path(value).exists() and find_generation_card(value) is None:
            return os.path.abspath(value)
        return value

    data_cfg = dataclasses.replace(
        config.data, train=local(config.data.train), valid=local(config.data.valid)
    )
    return dataclasses.replace(
        config, base=local(config.base), text_encoder=local(config.text_encoder), data=data_cfg
    )


def same_paths(saved: dict[str, Any], new: dict[str, Any], bases: list[Path]) -> dict[str, Any]:
    """``saved`` (a recipe dict) with its relative paths replaced by ``new``'s absolute ones
    where one of ``bases`` joined with the relative path is that place.

    Runs from before paths were made absolute stored them relative to the working directory
    of the time, which was not recorded: ``bases`` are the places it may have been (the
    working directory now, the run directory's parents), so that such a run resumes as it
    did, and from elsewhere when its directory is under the old working directory.
    """

    def same(old: Any, value: Any) -> bool:
        if not (isinstance(old, str) and isinstance(value, str) and old and os.path.isabs(value)):
            return False
        joined = (os.path.normpath(os.path.join(b, old)) for b in bases)
        return not os.path.isabs(old) and value in joined

    out = json.loads(json.dumps(saved))
    for key in ("base", "text_encoder"):
        if same(out.get(key), new.get(key)):
            out[key] = new[key]
    data, new_data = out.get("data"), new.get("data") or {}
    for key in ("train", "valid") if isinstance(data, dict) else ():
        if same(data.get(key), new_data.get(key)):
            data[key] = new_data[key]
    return out
