"""``load_lm``: from a name or a path to a ready LM, its conditioners and its codec."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..codec.base import Codec
from ..codec.load import load_codec
from ..codec.torch_load import codec_from_hf, resolve_device
from ..errors import CheckpointError, ModelNotAvailableError
from ..runtime.files import not_a_file
from ..zoo import hub
from ..zoo.lm_cards import find_generation_card, generation_card_names
from ..zoo.lm_checkpoints import COMPRESSION_FILE, LM_FILE, LMCheckpoint, read_audiocraft
from ..zoo.lm_hf import read_hf_dir
from ..zoo.lm_native import CARD_NAME, CODEC_CARD, read_audiotok_lm
from ..zoo.weights import adopt_state, card_file, module_shapes, read_json, shape_mismatch
from .conditioners import ChromaConditioner, ConditionProvider, TextConditioner
from .lm import LMModel
from .lm_config import LMConfig
from .t5_load import load_t5, t5_from_state


def read_lm_checkpoint(path: str | Path) -> LMCheckpoint:
    """Reads an LM checkpoint in any of its formats, detected from the path.

    audiotok's own folder (``lm.json``, :mod:`audiotok.zoo.lm_native`) is recognised first. A
    directory holding both formats (a Hugging Face snapshot of an official repository) is
    read as the audiocraft export, the official one.

    Raises:
        CheckpointError: Missing, unreadable, or not an LM checkpoint we support.
    """
    kind, where = checkpoint_format(path)
    readers = {"audiotok": read_audiotok_lm, "audiocraft": read_audiocraft, "hf": read_hf_dir}
    return readers[kind](where)


def checkpoint_format(path: str | Path) -> tuple[str, Path]:
    """The format of the LM checkpoint at ``path`` (``audiotok``, ``audiocraft`` or ``hf``)
    and what its reader takes, from the names alone: what :func:`read_lm_checkpoint` reads,
    for callers that need to know it without reading the weights.

    Raises:
        CheckpointError: Missing, or not an LM checkpoint we support.
    """
    path = Path(path)
    if path.is_dir() and (path / CARD_NAME).is_file():
        return "audiotok", path
    if path.name == CARD_NAME and path.is_file():
        return "audiotok", path.parent
    if path.is_dir():
        if (path / LM_FILE).is_file():
            return "audiocraft", path / LM_FILE
        if (path / "config.json").is_file():
            return "hf", path
        raise CheckpointError(
            f"{path}: a directory without {LM_FILE} (audiocraft) or config.json (transformers)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: {not_a_file(path)}")
    if path.name == "config.json" or path.suffix == ".safetensors":
        return "hf", path.parent
    return "audiocraft", path


def codec_file(path: str | Path) -> Path | None:
    """The codec's own file beside the LM checkpoint at ``path``, as ``load_codec`` and
    ``audiotok encode -m`` take it, found without reading the weights: an audiocraft export's
    ``compression_state_dict.bin``, an audiotok folder's codec card; None for a transformers
    directory, whose codec is bundled in the LM's weights (:attr:`LMCheckpoint.codec_path`).

    Raises:
        CheckpointError: Not an LM checkpoint we support, or a damaged audiotok card.
    """
    kind, where = checkpoint_format(path)
    if kind == "audiocraft":
        found = where.parent / COMPRESSION_FILE
    elif kind == "audiotok":
        found = card_file(read_json(where / CARD_NAME), "codec", CODEC_CARD, where / CARD_NAME)
    else:
        return None
    return found if found.is_file() else None


class LoadedLM(NamedTuple):
    """What :func:`load_lm` returns; unpacks as ``lm, conditioner, codec, config``."""

    lm: LMModel
    conditioner: ConditionProvider
    codec: Codec
    config: LMConfig


def load_lm(
    source: str | os.PathLike = "musicgen-small",
    *,
    device: str | torch.device = "cpu",
    text_encoder: str | os.PathLike | None = None,
    progress: bool = True,
) -> LoadedLM:
    """Loads a MusicGen / AudioGen LM with its conditioners and its codec, in eval mode.

    Args:
        source: One of

            * a registry name (``musicgen-small``, ``musicgen-melody``, ``audiogen-medium``...,
              or its Hugging Face id ``facebook/musicgen-small``): weights from the Hugging
              Face cache, else downloaded;
            * an audiocraft export: a directory with ``state_dict.bin`` and
              ``compression_state_dict.bin`` (or the ``state_dict.bin`` itself);
            * a transformers MusicGen directory (``config.json`` + ``model.safetensors``
              + the T5 tokenizer files);
            * audiotok's own folder (``lm.json`` + ``lm.safetensors`` + a codec card + the
              T5 tokenizer; what ``audiotok finetune`` exports).
        device: Where to put the models.
        text_encoder: For audiocraft exports, the T5 encoder to use instead of the one the
            checkpoint names (looked up in the Hugging Face cache): a local directory or a
            Hugging Face name.
        progress: Show download progress.

    Returns:
        ``(lm, conditioner, codec, config)``; ``conditioner(texts)`` gives the LM's condition.

    Raises:
        ModelNotAvailableError: Unknown name, or weights (LM, T5, codec) not available.
        CheckpointError: An unreadable checkpoint or one we do not support.
        DeviceError: ``device`` does not exist or is not available.
    """
    device = resolve_device(device)
    name = hub.registry_lookup(source)
    card = find_generation_card(name) if name is not None else None
    if card is not None:
        _, path = hub.fetch(card, progress=progress)
    else:
        path = Path(source)
        if not path.exists():
            raise ModelNotAvailableError(
                f"unknown generation model {str(source)!r}: neither a registry name "
                f"({', '.join(generation_card_names())}) nor an existing file or directory"
            )
    ckpt = read_lm_checkpoint(path)
    lm = build_lm(ckpt.config, ckpt.lm_state, str(ckpt.path))
    codec = _load_codec(ckpt, device)
    _check_codec(ckpt, codec)
    # T5 last: it is the largest download, and the other parts fail faster.
    conditioner = build_conditioners(ckpt, text_encoder)
    return LoadedLM(lm.to(device), conditioner.to(device).eval(), codec, ckpt.config)


def state_mismatch(config: LMConfig, state: dict[str, torch.Tensor]) -> str | None:
    """Why ``state`` does not fit ``config`` (one line), or None when it fits."""
    return shape_mismatch(module_shapes(LMModel, config), state)


def build_lm(config: LMConfig, state: dict[str, torch.Tensor], where: str) -> LMModel:
    """An LM of architecture ``config`` holding the weights ``state``, in eval mode.

    Raises:
        CheckpointError: The weights don't fit the architecture; the message says how.
    """
    problem = state_mismatch(config, state)
    if problem:
        raise CheckpointError(f"{where}: LM weights don't fit its config ({problem})")
    return adopt_state(LMModel, config, state)


def _load_projection(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{where}: conditioner weights don't fit ({reason})") from None


def build_conditioners(
    ckpt: LMCheckpoint, text_encoder: str | os.PathLike | None = None
) -> ConditionProvider:
    """The checkpoint's conditioners with their weights (T5 loaded as the checkpoint says)."""
    conditioners: dict[str, nn.Module] = {}
    for spec in ckpt.config.conditioners:
        module: nn.Module
        if spec.is_text:
            if ckpt.t5_state is not None and text_encoder is None:
                tokenizer, t5 = t5_from_state(ckpt.t5_config or {}, ckpt.t5_state, ckpt.path)
            else:
                t5_source = text_encoder if text_encoder is not None else str(spec.t5_name)
                tokenizer, t5 = load_t5(t5_source, offline=hub.is_offline())
            if t5.config.d_model != spec.dim:
                raise CheckpointError(
                    f"{ckpt.path}: the text encoder is {t5.config.d_model} wide, the "
                    f"checkpoint's projection expects {spec.dim} ({spec.t5_name})"
                )
            module = TextConditioner(spec.name, tokenizer, t5, ckpt.config.dim)
        else:
            module = ChromaConditioner(spec.name, spec.dim, ckpt.config.dim)
        state = {k.removeprefix("output_proj."): v for k, v in _proj(ckpt, spec.name).items()}
        _load_projection(module.output_proj, state, str(ckpt.path))
        conditioners[spec.name] = module
    return ConditionProvider(conditioners)


def _proj(ckpt: LMCheckpoint, name: str) -> dict[str, torch.Tensor]:
    state = ckpt.conditioner_states.get(name)
    if not state:
        raise CheckpointError(f"{ckpt.path}: no weights for conditioner {name!r}")
    return state


def _load_codec(ckpt: LMCheckpoint, device: torch.device) -> Codec:
    """The codec the checkpoint was trained with, through :func:`audiotok.load_codec`."""
    if ckpt.codec_state is not None:
        # transformers bundles the codec (audio_encoder.*) in the LM's files.
        return codec_from_hf(ckpt.codec_config, ckpt.codec_state, ckpt.path, device=device)
    if ckpt.codec_path is None:
        raise CheckpointError(f"{ckpt.path}: no {COMPRESSION_FILE} (the codec) beside it")
    return load_codec(ckpt.codec_path, device=device)


def _check_codec(ckpt: LMCheckpoint, codec: Codec) -> None:
    config = ckpt.config
    problems = []
    if codec.cardinality != config.card:
        problems.append(f"{codec.cardinality} entries per codebook, the LM expects {config.card}")
    if codec.sample_rate != config.sample_rate:
        problems.append(f"{codec.sample_rate} Hz, the LM expects {config.sample_rate} Hz")
    interleaved = config.stereo_interleave and not config.stereo_per_timestep
    per_channel = config.n_q // 2 if interleaved else config.n_q
    available = codec.num_codebooks(codec.bandwidths[-1])
    if available < per_channel:
        problems.append(f"{available} codebooks, the LM models {per_channel}")
    if problems:
        raise CheckpointError(f"{ckpt.path}: its codec does not fit the LM ({'; '.join(problems)})")
