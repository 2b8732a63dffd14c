"""From a training checkpoint to a model card that ``load_codec`` (and ``-m``) reads.

The card (``NAME.json`` + ``NAME.safetensors``) holds the architecture, the weights without
the codebooks' training statistics (optionally as float16), static entropy-coder priors
counted on the training data, the training data's sources and licences, the step and the last
validation metrics. The packaged default codec is such a card.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..codec.model import EncodecModel
from ..compression.container.adaptive import AdaptiveCoder
from ..zoo.codec_checkpoints import save_checkpoint
from .config import TrainConfig
from .data import PRIORS_STREAM, AudioItem, CropSampler, read_manifest, split_by_source
from .slices import AVERAGED, HISTORY_NAME
from .state import read_training_meta
from .trainer import LOG_NAME

LICENCE = (
    "MIT. Trained on the open audio listed under training_data (Debian packages), each under "
    "its own licence as stated there."
)


def load_trained_model(
    checkpoint: str | os.PathLike, averaged: bool = False
) -> tuple[EncodecModel, dict[str, Any]]:
    """The codec of a training checkpoint or compact state (eval mode) and its metadata.

    Args:
        checkpoint: The file.
        averaged: Take the averaged weights (``optim.ema_decay``) with the live codebooks.
    """
    meta = read_training_meta(checkpoint)
    config = TrainConfig.from_dict(meta["config"])
    tensors = load_file(str(checkpoint))
    prefix = "codec.model."
    state = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    model = EncodecModel(config.model)
    if averaged:
        prefix = AVERAGED + "module.model."
        weights = {name for name, _ in model.named_parameters()}
        found = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        if not found:
            raise ValueError(f"{checkpoint}: no averaged weights (trained without ema_decay)")
        state.update({k: v for k, v in found.items() if k in weights})
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A compact state leaves out the EMA sums, which inference never reads.
    missing = [k for k in missing if not k.endswith("._codebook.embed_avg")]
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: codec keys missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.eval(), meta


def _licences(items: list[AudioItem]) -> dict[str, list[str]]:
    """Source package -> the licence names its Debian copyright file states."""
    out: dict[str, list[str]] = {}
    for item in items:
        if item.source in out:
            continue
        names: set[str] = set()
        root = next((p for p in item.path.parents if p.name == item.source), None)
        for copyright_file in root.glob("usr/share/doc/*/copyright") if root else ():
            text = copyright_file.read_text(encoding="utf-8", errors="replace")
            names.update(m.strip() for m in re.findall(r"^License:\s*(\S.*)$", text, re.M))
        out[item.source] = sorted(names) or ["see the package's copyright file"]
    return out


@torch.no_grad()
def measure_priors(model: EncodecModel, sampler: CropSampler, batches: int) -> np.ndarray:
    """Entropy-coder priors ``[n_q, bins]`` from the codes of ``batches`` training batches."""
    codes = []
    for i in range(batches):
        x = sampler.batch(PRIORS_STREAM + i)
        codes.append(model.encode(x, model.config.n_q)[0].numpy())
    return AdaptiveCoder.estimate_priors(codes, model.config.bins)


def history_chain(folder: Path, step: int) -> list[dict[str, Any]]:
    """The slices of a state's history that led to ``step``, latest first.

    Lines of variants that were not continued (ablations from the same state) are told
    apart by their steps: only the chain of slices each starting where the previous one
    ended, back from ``step`` to 0, counts.
    """
    log = folder / HISTORY_NAME
    if not log.is_file():
        return []
    ending: dict[int, list[dict[str, Any]]] = {}  # end step -> the slices ending there
    for line in log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        ending.setdefault(record["steps"][1], []).append(record)
    chain: list[dict[str, Any]] = []
    while step in ending:
        # Of two slices ending at the same step (rare), the later line is the one kept.
        record = ending[step][-1]
        chain.append(record)
        if record["steps"][0] >= step:  # a zero-length slice ends the walk
            break
        step = record["steps"][0]
    return chain


def last_validation(folder: Path, step: int, averaged: bool = False) -> dict[str, Any] | None:
    """The validation of the state at ``step``: from its history chain or its run's log.

    With ``averaged``, that of the averaged weights (history lines only).
    """
    key = "validation_averaged" if averaged else "validation"
    for record in history_chain(folder, step):
        if record.get(key):
            return {"step": record["steps"][1], "validation": record[key]}
    if averaged:
        return None
    found = None
    log = folder / LOG_NAME
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("validation") and record["step"] <= step:
                found = {"step": record["step"], "validation": record["validation"]}
    return found


def compute_spent(folder: Path, step: int) -> dict[str, Any] | None:
    """Training seconds and audio seen per machine over the history chain up to ``step``."""
    spent: dict[str, dict[str, float]] = {}
    for record in history_chain(folder, step):
        entry = spent.setdefault(record["machine"], {"train_seconds": 0.0, "audio_seconds": 0.0})
        entry["train_seconds"] += record["train_seconds"]
        entry["audio_seconds"] += record["audio_seconds"]
    return {k: {n: round(v, 1) for n, v in e.items()} for k, e in spent.items()} or None


def export_codec(
    checkpoint: str | os.PathLike,
    card_path: str | os.PathLike,
    *,
    name: str,
    manifest: str | None = None,
    prior_batches: int = 64,
    half: bool = True,
    averaged: bool = False,
    overwrite: bool = False,
) -> Path:
    """Writes a training checkpoint's codec as an audiotok card with priors and provenance.

    Args:
        checkpoint: A ``checkpoint.safetensors`` of a run, or a compact state (its folder's
            ``history.jsonl`` gives the validation and the compute spent).
        card_path: The card to write (``.json``; weights go beside it).
        name: The model id that compressed files and tokens will carry.
        manifest: The training manifest, when not where the run's config says.
        prior_batches: Training batches encoded to count the priors.
        half: Store the weights as float16.
        averaged: Export the averaged weights (``optim.ema_decay``) instead of the last.
        overwrite: Replace an existing card.

    Returns:
        The card's path.
    """
    checkpoint = Path(checkpoint)
    model, meta = load_trained_model(checkpoint, averaged)
    config = TrainConfig.from_dict(meta["config"])
    if half:
        # Measure the priors on the model as it will be loaded: float16-rounded weights.
        model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    items = read_manifest(manifest or config.data.manifest)
    train, _ = split_by_source(items, config.data.validation_sources)
    sampler = CropSampler(train, config.data, config.model.sample_rate, config.seed)
    priors = measure_priors(model, sampler, prior_batches)
    hours: dict[str, float] = {}
    for item in train:
        hours[item.category] = hours.get(item.category, 0.0) + item.seconds / 3600
    step = int(meta["step"])
    validation = last_validation(checkpoint.parent, step, averaged)
    recipe = config.to_dict()
    for key in ("manifest", "subset"):  # no machine paths
        recipe["data"][key] = Path(recipe["data"][key]).name
    return save_checkpoint(
        model,
        card_path,
        name=name,
        # 6 kbps, or the recipe's bandwidth nearest it (a card's default must be one of them).
        default_bandwidth=min(config.model.target_bandwidths, key=lambda b: abs(b - 6.0)),
        entropy_priors=priors,
        inference_only=True,
        half=half,
        overwrite=overwrite,
        licence=LICENCE,
        training={
            "steps": step,
            "weights": "averaged" if averaged else "last",
            "audio_hours_seen": round(meta.get("totals", {}).get("audio_seconds", 0) / 3600, 2),
            "compute": compute_spent(checkpoint.parent, step),
            "recipe": recipe,
            "hours_by_category": {k: round(v, 2) for k, v in sorted(hours.items())},
            "validation_sources": list(config.data.validation_sources),
            "validation": validation,
        },
        training_data=_licences(train),
    )
