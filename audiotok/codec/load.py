"""``load_codec``: from a name or a path to a ready :class:`~audiotok.codec.base.Codec`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, DeviceError, ModelNotAvailableError
from ..runtime.allocator import tune_allocator
from ..zoo import hub
from ..zoo.codec_cards import DEFAULT_CODEC, ModelCard, card_names, find_card
from ..zoo.codec_checkpoints import (
    Checkpoint,
    build_model,
    hf_checkpoint,
    read_checkpoint,
    recognise,
    state_mismatch,
)
from ..zoo.codec_convert import config_from_hf
from .base import Codec
from .encodec import EncodecCodec

BACKENDS = ("torch", "onnx")


def load_codec(
    source: str | os.PathLike = DEFAULT_CODEC,
    *,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    backend: str = "torch",
) -> Codec:
    """Loads a codec.

    Args:
        source: One of

            * a registry name (``audiotok_24khz``, the default that ships in the package;
              ``encodec_24khz``, ``encodec_48khz``, ``encodec_32khz``, ``encodec_16khz``, or
              an alias such as ``facebook/encodec_32khz``): the official models' weights
              come from the local cache, else are downloaded and verified;
            * a path to an ``encodec`` ``.th`` file (architecture recognised from the official
              file name or from the tensors' shapes);
            * a Hugging Face transformers model directory (``config.json`` + weights);
            * an audiocraft export (``compression_state_dict.bin``, or its directory);
            * an audiotok checkpoint (``NAME.json`` + ``NAME.safetensors``);
            * an ``audiotok export-onnx`` folder (run by ONNX Runtime whatever ``backend``).
        checkpoint: With a registry name, the weights file to use for that architecture
            instead of the cache (loaded as it is; no hash check on files the user names).
        device: Where to put the model.
        backend: ``torch`` (an :class:`EncodecCodec`), or ``onnx``: the model's ONNX graphs
            run by ONNX Runtime on the CPU (:class:`~audiotok.codec.onnx_runtime.OnnxCodec`),
            exported once into ``$AUDIOTOK_CACHE/onnx/`` (keyed by the weights' fingerprint)
            and reused from there.

    Loading a codec also tunes the process's allocator for fast inference (see
    :mod:`audiotok.runtime`; ``AUDIOTOK_KEEP_MALLOC=1`` turns that off).

    Returns:
        The codec, in eval mode, on ``device``.

    Raises:
        ModelNotAvailableError: Unknown name, or weights neither cached nor downloadable.
        CheckpointError: An unreadable checkpoint, or one of another architecture.
        DeviceError: ``device`` does not exist or is not available (``onnx``: not the CPU).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    from .onnx_runtime import OnnxCodec, is_onnx_export

    if isinstance(source, (str, os.PathLike)) and is_onnx_export(source):
        _onnx_device(device)
        return OnnxCodec(source)
    if backend == "onnx":
        _onnx_device(device)
        return OnnxCodec(_onnx_folder(load_codec(source, checkpoint=checkpoint)))
    device = resolve_device(device)
    tune_allocator()
    card = find_card(str(source)) if isinstance(source, str) else None
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
            return load_codec(pointed.name, device=device)
        codec = _from_file(ckpt)
    return codec.to(device)


def _onnx_device(device: str | torch.device) -> None:
    if resolve_device(device).type != "cpu":
        raise DeviceError(f"the onnx backend runs on the CPU, not {device}; use the torch backend")


def _onnx_folder(codec: EncodecCodec) -> Path:
    """The cached ONNX export of ``codec``'s weights; exported there first if missing."""
    from .onnx_export import FORMAT_VERSION, export_onnx

    # The format in the name: an export of an older audiotok (without the streaming graphs)
    # is made again.
    name = f"{codec.model_id}-{codec.fingerprint().hex()}-v{FORMAT_VERSION}"
    folder = hub.cache_dir() / "onnx" / name
    if not (folder / "model.json").is_file():
        # Exported beside, then renamed: a process that dies mid-export leaves no half folder
        # where another would take it for whole.
        partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
        export_onnx(codec, partial, overwrite=True)
        try:
            os.replace(partial, folder)
        except OSError:  # another process put its export there first
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    return folder


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, if it exists and is usable here.

    Raises:
        DeviceError: A malformed name, or an accelerator this machine or torch build lacks.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
    elif card is not None:
        name, default = card.name, card.default_bandwidth
    else:
        name, default = ckpt.path.stem if ckpt.path.is_file() else ckpt.path.name, None
    if default is not None and default not in config.target_bandwidths:
        default = None
    priors = None if ckpt.priors is None else ckpt.priors.numpy()
    return EncodecCodec(model, name, default, entropy_priors=priors)
