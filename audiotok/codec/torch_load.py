"""Loading a codec into torch: a registry name or a checkpoint file to an :class:`EncodecCodec`.

:func:`~audiotok.codec.load.load_codec` comes here for the torch backend (and to export a
model for the onnx backend the first time); the ONNX Runtime backend never imports this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, DeviceError, ModelNotAvailableError, first_line
from ..runtime.allocator import tune_allocator
from ..zoo import hub
from ..zoo.codec_cards import ModelCard, card_names, find_card
from ..zoo.codec_checkpoints import (
    Checkpoint,
    build_model,
    hf_checkpoint,
    read_checkpoint,
    recognise,
    state_mismatch,
)
from ..zoo.codec_convert import config_from_hf
from .encodec import EncodecCodec


def load_torch_codec(
    source: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> EncodecCodec:
    """The codec of ``source`` (as :func:`~audiotok.codec.load.load_codec` takes it) in torch.

    Raises:
        ModelNotAvailableError, CheckpointError, DeviceError: As ``load_codec``.
    """
    device = resolve_device(device)
    tune_allocator()
    name = hub.registry_lookup(source)
    card = find_card(name) if name is not None else None
    if card is not None:
        if checkpoint is not None:
            ckpt = read_checkpoint(checkpoint)
        else:
            _, path = hub.fetch(card)
            ckpt = read_checkpoint(path)
        codec = _from_card(card, ckpt)
    else:
        if checkpoint is not None:
            raise CheckpointError(
                "a checkpoint (--checkpoint) goes with a registry model name, not with a path"
            )
        path = Path(source)
        if not path.exists():
            if find_card(str(source)) is not None:  # a Path: not looked up
                raise ModelNotAvailableError(
                    f"{source}: no such file or directory (for the registry model, give the "
                    f"name as a string: load_codec({str(source)!r}))"
                )
            raise ModelNotAvailableError(
                f"unknown model {str(source)!r}: neither a registry name "
                f"({', '.join(card_names())}) nor an existing file or directory"
            )
        ckpt = read_checkpoint(path)
        if ckpt.pointer is not None:
            # audiocraft ships some codecs as a reference to a published model; only registry
            # names are followed, so a pointer can't lead to another file or to itself.
            pointed = find_card(ckpt.pointer)
            if pointed is None:
                raise CheckpointError(
                    f"{path}: refers to model {ckpt.pointer!r}, which is not in the registry "
                    f"({', '.join(card_names())})"
                )
            return load_torch_codec(pointed.name, device=device)
        codec = _from_file(ckpt)
    return codec.to(device)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, if it exists and is usable here.

    Raises:
        DeviceError: A malformed name, or an accelerator this machine or torch build lacks.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        reason = first_line(exc)
        raise DeviceError(f"invalid device {str(device)!r} ({reason})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {dev}: CUDA is not available with this torch on this machine"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {dev}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {dev}: MPS is not available on this machine")
    return dev


def codec_from_hf(
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    where: str | os.PathLike,
    device: str | torch.device = "cpu",
) -> EncodecCodec:
    """A codec from a transformers EnCodec config and state dict held in memory.

    For files that bundle a codec with other weights, such as transformers' MusicGen
    (``audio_encoder.*``). The architecture is read from ``config``; the model is named after
    the registry card its tensors match, else after ``where``.

    Raises:
        CheckpointError: The config or the tensors are not an EnCodec's.
    """
    tune_allocator()
    checkpoint = hf_checkpoint(config_from_hf(config), state, Path(where))
    return _from_file(checkpoint).to(resolve_device(device))


def _from_card(card: ModelCard, ckpt: Checkpoint) -> EncodecCodec:
    """The card's model with the checkpoint's weights, checked to be of its architecture."""
    if ckpt.pointer is not None:
        # audiocraft ships some codecs as a reference to the published model.
        if find_card(ckpt.pointer) is not card:
            raise CheckpointError(f"{ckpt.path}: refers to model {ckpt.pointer!r}, not {card.name}")
        ckpt = read_checkpoint(hub.fetch(card)[1])
    problem = state_mismatch(card.config, ckpt.state)
    if problem:
        found = recognise(ckpt)
        guess = f"; it looks like {found.name}" if found and found is not card else ""
        raise CheckpointError(f"{ckpt.path}: weights don't fit {card.name} ({problem}){guess}")
    # A file that states its own architecture (padding mode, causality...) is built as stated.
    config = ckpt.config or card.config
    model = build_model(config, ckpt.state, str(ckpt.path))
    priors = None if ckpt.priors is None else ckpt.priors.numpy()
    return EncodecCodec(model, card.name, card.default_bandwidth, entropy_priors=priors)


def _from_file(ckpt: Checkpoint) -> EncodecCodec:
    """A model from a checkpoint named by path, its architecture read or recognised."""
    card = recognise(ckpt)
    config = ckpt.config or (card.config if card else None)
    if config is None:
        raise CheckpointError(
            f"{ckpt.path}: architecture not recognised from its name or tensor shapes; "
            f"name it: `-m NAME --checkpoint {ckpt.path}` "
            f"with NAME one of {', '.join(card_names())}"
        )
    model = build_model(config, ckpt.state, str(ckpt.path))
    if ckpt.card is not None:
        name = str(ckpt.card.get("name") or ckpt.path.stem)
        default = ckpt.card.get("default_bandwidth")
        if isinstance(default, bool) or not isinstance(default, int | float | None):
            # A hand-edited "6" fell back to the lowest bandwidth without a word. (A number
            # that is no bandwidth still does: exports before 2026-12-07 wrote 6 always.)
            rates = ", ".join(f"{b:g}" for b in config.target_bandwidths)
            raise CheckpointError(
                f"{ckpt.path}: default_bandwidth {default!r} is not one of its bandwidths ({rates})"
            )
    elif card is not None:
        name, default = card.name, card.default_bandwidth
    else:
        name, default = ckpt.path.stem if ckpt.path.is_file() else ckpt.path.name, None
    if default is not None and default not in config.target_bandwidths:
        default = None
    priors = None if ckpt.priors is None else ckpt.priors.numpy()
    return EncodecCodec(model, name, default, entropy_priors=priors)
