"""What trains: LoRA adapters (peft), chosen layers, or the whole LM; merging adapters back.

LoRA goes on ``nn.Linear`` modules by name (``out_proj`` of self- and cross-attention,
``linear1`` and ``linear2`` of the feed-forward); the packed ``in_proj_weight`` of attention
is a bare parameter (audiocraft's key), which peft's module adapters can't wrap. peft
(``pip install 'audiotok[finetune]'``) injects the adapters in place, so the LM keeps its
class and its forward; :func:`merged_state` folds them back into plain weights under
audiocraft's keys for export, and :func:`save_adapter` / :func:`load_adapter` keep them apart
in peft's own file names (``adapter_model.safetensors`` + ``adapter_config.json``), with the
run's other trained weights beside them (``trained.safetensors``: the text projections, the
``train_layers``), without which the adapters alone are not the model the run trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime.files import atomic_path
from .config import FinetuneError, LoraConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# The weights a LoRA run trains besides the adapters, by their name in the run's trainable
# module (:class:`~audiotok.finetune.loop.Trainable`): ``lm.NAME`` (the adapted LM's parameter
# names) and ``proj.CONDITION.NAME`` (a conditioner's ``output_proj``).
TRAINED_WEIGHTS = "trained.safetensors"


def require_peft() -> Any:
    """The ``peft`` module, or a one-line error saying how to install it."""
    try:
        import peft
    except ImportError:
        raise FinetuneError(
            "LoRA (lora.rank > 0) needs the peft package: pip install 'audiotok[finetune]'"
        ) from None
    return peft


def _peft_config(settings: LoraConfig) -> Any:
    peft = require_peft()
    return peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
    )


def add_lora(lm: nn.Module, settings: LoraConfig, seed: int) -> nn.Module:
    """Injects LoRA adapters into ``lm`` in place (A drawn from ``seed``, B zero: the LM's
    output is unchanged until it trains); freezes everything else.

    Raises:
        FinetuneError: peft missing, or no module named as ``lora.targets``.
    """
    peft = require_peft()
    names = {name.rsplit(".", 1)[-1] for name, m in lm.named_modules() if isinstance(m, nn.Linear)}
    missing = sorted(set(settings.targets) - names)
    if missing:
        raise FinetuneError(
            f"lora.targets: no linear module named {', '.join(missing)} (there are "
            f"{', '.join(sorted(n for n in names if not n.isdigit()))})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(_peft_config(settings), lm)
    for name, p in lm.named_parameters():
        p.requires_grad_("lora_" in name)
    return lm


def select_trainable(lm: nn.Module, prefixes: tuple[str, ...], lora: bool) -> None:
    """Sets ``requires_grad``: the parameters under ``prefixes`` (all of them when empty and
    without LoRA) plus any adapters.

    Raises:
        FinetuneError: A prefix that names no parameter.
    """
    names = [n for n, _ in lm.named_parameters()]
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            raise FinetuneError(
                f"train_layers: {prefix!r} names no parameter (e.g. transformer.layers.0, "
                "linears, emb, out_norm)"
            )
    for name, p in lm.named_parameters():
        chosen = any(name == q or name.startswith(q + ".") for q in prefixes)
        p.requires_grad_("lora_" in name or chosen or (not prefixes and not lora))


def has_lora(lm: nn.Module) -> bool:
    """Whether adapters were injected into ``lm``."""
    return any("lora_" in name for name, _ in lm.named_parameters())


@torch.no_grad()
def merged_state(lm: nn.Module) -> dict[str, torch.Tensor]:
    """The LM's weights with every adapter folded in, under the plain (audiocraft) keys.

    ``W + (alpha / r) B A`` per adapted layer (peft's ``get_delta_weight``), float32 on the
    CPU; the LM itself is not modified.
    """
    state = {k: v.detach().float().cpu() for k, v in lm.state_dict().items() if "lora_" not in k}
    if not has_lora(lm):
        return state
    from peft.tuners.lora import LoraLayer

    out = {k.replace(".base_layer.", "."): v for k, v in state.items()}
    for name, module in lm.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                delta = module.get_delta_weight(adapter).detach().float().cpu()
                out[f"{name}.weight"] = out[f"{name}.weight"] + delta
    return out


def save_adapter(
    lm: nn.Module,
    settings: LoraConfig,
    directory: Path,
    trained: dict[str, torch.Tensor] | None = None,
) -> None:
    """The adapters alone, as peft names them: ``adapter_model.safetensors`` (peft's
    ``get_peft_model_state_dict`` keys) and ``adapter_config.json``; and ``trained``, the
    run's other trained weights (``lm.*``, ``proj.*``), as ``trained.safetensors``.

    The adapters alone would give another model than the run's whenever it also trained
    projections or layers, so those travel with them (:func:`load_adapter` applies both).
    """
    from safetensors.torch import save

    peft = require_peft()
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in
               peft.get_peft_model_state_dict(lm).items()}  # fmt: skip
    config = _peft_config(settings).to_dict()
    # peft keeps target_modules as a set; its own save_pretrained writes it as a list too.
    config = json.loads(
        json.dumps(config, default=lambda v: sorted(v) if isinstance(v, set) else str(v))
    )
    with atomic_path(directory / ADAPTER_WEIGHTS, overwrite=True) as tmp:
        tmp.write_bytes(save(tensors))
    with atomic_path(directory / ADAPTER_CONFIG, overwrite=True) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if trained:
        others = {k: v.detach().float().cpu().contiguous() for k, v in trained.items()}
        with atomic_path(directory / TRAINED_WEIGHTS, overwrite=True) as tmp:
            tmp.write_bytes(save(others))


def load_adapter(
    lm: nn.Module, directory: str | os.PathLike, conditioner: nn.Module | None = None
) -> nn.Module:
    """Applies what :func:`save_adapter` wrote to a base LM (in place): the adapters, and the
    run's other trained weights: the LM's into ``lm``, the text projections into
    ``conditioner`` (a :class:`~audiotok.generate.conditioners.ConditionProvider`).

    Raises:
        FinetuneError: peft missing, no adapter files in ``directory``, weights that don't
            fit, or trained projections and no ``conditioner`` to put them in (without them
            the model would silently differ from the run's).
    """
    from safetensors.torch import load_file

    peft = require_peft()
    directory = Path(directory)
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise FinetuneError(f"{directory}: no {ADAPTER_WEIGHTS}")
    others = {}
    if (directory / TRAINED_WEIGHTS).is_file():
        others = load_file(str(directory / TRAINED_WEIGHTS))
    projections = _projection_states(others, conditioner, directory)
    config = peft.LoraConfig.from_pretrained(str(directory))
    peft.inject_adapter_in_model(config, lm)
    result = peft.set_peft_model_state_dict(lm, load_file(str(directory / ADAPTER_WEIGHTS)))
    if getattr(result, "unexpected_keys", None):
        raise FinetuneError(f"{directory}: adapters don't fit this LM")
    lm_state = {k[len("lm.") :]: v for k, v in others.items() if k.startswith("lm.")}
    _copy_into(lm, lm_state, directory / TRAINED_WEIGHTS)
    for module, state in projections:
        _copy_into(module, state, directory / TRAINED_WEIGHTS)
    return lm


def _projection_states(
    others: dict[str, torch.Tensor], conditioner: nn.Module | None, directory: Path
) -> list[tuple[nn.Module, dict[str, torch.Tensor]]]:
    """The ``output_proj`` modules of ``conditioner`` and their weights from ``others``."""
    names: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in others.items():
        if key.startswith("proj."):
            name, _, rest = key[len("proj.") :].partition(".")
            names.setdefault(name, {})[rest] = value
        elif not key.startswith("lm."):
            raise FinetuneError(f"{directory / TRAINED_WEIGHTS}: unexpected weight {key!r}")
    if names and conditioner is None:
        raise FinetuneError(
            f"{directory}: the run also trained the text projections ({', '.join(names)}); "
            "pass the conditioner too: load_adapter(loaded.lm, DIR, loaded.conditioner)"
        )
    modules = getattr(conditioner, "conditioners", {})
    missing = sorted(set(names) - set(modules))
    if missing:
        raise FinetuneError(f"{directory}: no conditioner {', '.join(missing)} in this model")
    return [(modules[name].output_proj, state) for name, state in names.items()]


@torch.no_grad()
def _copy_into(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Copies ``state`` into the parameters of ``module`` it names, all or nothing."""
    params = dict(module.named_parameters())
    for key, value in state.items():
        if key not in params or params[key].shape != value.shape:
            raise FinetuneError(f"{where}: {key} does not fit this model")
    for key, value in state.items():
        params[key].copy_(value)
