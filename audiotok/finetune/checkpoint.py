"""A fine-tuning run's resume state: one safetensors file, no pickle, written atomically.

Only what training changes is stored, so a checkpoint of a LoRA run is a few MB even for a
large model: the trainable parameters (``param.NAME``), AdamW's moments and step counts
(``opt.INDEX.NAME``, by the parameter's place in the optimiser), and the random generators
(``rng``: the run's, for crops and condition dropout; ``rng.torch``, ``rng.cuda``: torch's
global ones, for LoRA's dropout); the frozen weights come from the base checkpoint again,
which the recipe names. The step, the recipe and the optimiser's hyper-parameters are JSON in the
file's metadata under ``audiotok.finetune``. Loading these into a run built from the same
recipe continues it exactly: the same crops, dropout draws and updates as without the stop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime.files import atomic_path
from .config import FinetuneError

META_KEY = "audiotok.finetune"
CHECKPOINT_NAME = "checkpoint.safetensors"


def save_state(
    path: str | os.PathLike,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    meta: dict[str, Any],
) -> None:
    """Writes the trainable parameters of ``module``, the optimiser and the generator."""
    from safetensors.torch import save

    tensors = {
        f"param.{name}": p.detach().cpu().contiguous()
        for name, p in module.named_parameters()
        if p.requires_grad
    }
    opt = optimizer.state_dict()
    for index, values in opt["state"].items():
        for name, value in values.items():
            tensors[f"opt.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng"] = generator.get_state()
    # torch's global generators drive LoRA's dropout (peft's nn.Dropout): saved too.
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    metadata = {META_KEY: json.dumps({**meta, "param_groups": opt["param_groups"]})}
    path = Path(path)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(save(tensors, metadata=metadata))


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (step, recipe) without its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise FinetuneError(f"{path}: not a readable checkpoint ({exc})") from None
    if META_KEY not in metadata:
        raise FinetuneError(f"{path}: not an audiotok fine-tuning checkpoint")
    return json.loads(metadata[META_KEY])


def load_state(
    path: str | os.PathLike,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restores :func:`save_state`'s file into a run built from the same recipe.

    Raises:
        FinetuneError: Unreadable, or its parameters don't match the run's trainable ones.
    """
    from safetensors.torch import load_file

    meta = read_meta(path)
    tensors = load_file(str(path))
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    stored = {k[len("param.") :]: v for k, v in tensors.items() if k.startswith("param.")}
    if stored.keys() != params.keys():
        extra = sorted(stored.keys() ^ params.keys())[:2]
        raise FinetuneError(f"{path}: trains other parameters than this recipe ({extra})")
    with torch.no_grad():
        for name, p in params.items():
            if stored[name].shape != p.shape:
                raise FinetuneError(f"{path}: {name} has another shape than the model's")
            p.copy_(stored[name])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            index, name = key[len("opt.") :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    generator.set_state(tensors["rng"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta
