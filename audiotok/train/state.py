"""Training checkpoints: one safetensors file holding everything needed to resume exactly.

Tensors (codec and discriminator weights and buffers, both optimisers' moments, the random
generator's state) are stored under prefixed keys; everything else (step, config, optimiser
hyper-parameters, balancer norms) is JSON in the file's metadata under ``audiotok.train``.
One file written atomically means a crash can never pair weights of one step with counters of
another. No pickle anywhere.

Keys::

    codec.encoder.model.0.conv.conv.weight_g   codec weights (official names after "codec.")
    averaged.module.model.encoder...            the averaged codec weights (optim.ema_decay)
    disc.discriminators.0.convs.0.bias ...      discriminator
    opt.codec.3.exp_avg                         Adam state of the codec's 4th parameter
    opt.disc.0.step ...                         Adam state of the discriminator
    rng                                         torch.Generator state (uint8)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime.files import atomic_path

META_KEY = "audiotok.train"
CHECKPOINT_NAME = "checkpoint.safetensors"


def _flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"{prefix}.{index}.{name}"] = value.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def _unflatten_optimizer(
    prefix: str, tensors: dict[str, torch.Tensor], groups: Any
) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def save_training_state(
    path: str | os.PathLike,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generator: torch.Generator,
    meta: dict[str, Any],
) -> None:
    """Writes a resumable checkpoint atomically.

    Args:
        path: The checkpoint file.
        modules: Name -> module whose state dict is saved under ``name.``.
        optimizers: Name -> optimiser saved under ``opt.name.``.
        generator: The training's random generator.
        meta: JSON-serialisable counters and settings (step, config, balancer...).
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
    groups = {}
    for name, optimizer in optimizers.items():
        flat, groups[name] = _flatten_optimizer(f"opt.{name}", optimizer.state_dict())
        tensors.update(flat)
    tensors["rng"] = generator.get_state()
    metadata = {META_KEY: json.dumps({**meta, "optimizer_groups": groups})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        # Bytes into the prepared file: it keeps the umask's mode (save_file makes it 0600).
        tmp.write_bytes(save(tensors, metadata=metadata))


def read_training_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (step, config...) without loading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if META_KEY not in metadata:
        raise ValueError(f"{path}: not an audiotok training checkpoint")
    return json.loads(metadata[META_KEY])


def load_training_state(
    path: str | os.PathLike,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generator: torch.Generator,
    optional: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Restores what :func:`save_training_state` wrote; returns its metadata.

    Modules named in ``optional`` (an addition that older checkpoints lack, such as the
    averaged weights) are left as they are when the file holds nothing for them.

    Raises:
        ValueError: Not a training checkpoint, or one of another architecture.
    """
    from safetensors.torch import load_file

    meta = read_training_meta(path)
    tensors = load_file(str(path))
    for name, module in modules.items():
        prefix = name + "."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state and name in optional:
            continue
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"{path}: {name} does not fit this config ({first})") from None
    groups = meta.pop("optimizer_groups")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(_unflatten_optimizer(f"opt.{name}", tensors, groups[name]))
    generator.set_state(tensors["rng"])
    return meta
