"""Reading and writing codec checkpoints in every format we meet.

=================  ==========================================================================
format             what it is
=================  ==========================================================================
``encodec``        the ``encodec`` package's ``.th``: a bare state dict with our key names;
                   the architecture is recognised from the file name or the tensors' shapes
``hf``             a transformers directory: ``config.json`` + ``model.safetensors`` (or
                   ``pytorch_model.bin``), keys renamed by :mod:`.codec_convert`
``audiocraft``     ``compression_state_dict.bin``: ``{'xp.cfg': YAML, 'best_state': state}``,
                   or ``{'pretrained': NAME}`` pointing at another model
``audiotok``       ours: ``NAME.json`` (a card with the config) + ``NAME.safetensors``
=================  ==========================================================================

Nothing is unpickled beyond tensors and plain containers: ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..codec.config import CodecConfig
from ..codec.model import EncodecModel
from ..errors import CheckpointError
from ..runtime.files import atomic_path, exists_error, not_a_file, sha256_file
from .codec_cards import CARDS, PRIORS_KEY, ModelCard
from .codec_convert import config_from_audiocraft, config_from_hf, hf_key_to_ours
from .weights import (
    adopt_state,
    card_file,
    card_version,
    float_state,
    load_safetensors,
    load_torch,
    module_shapes,
    read_json,
    shape_mismatch,
)

AUDIOTOK_FORMAT = "audiotok.codec"
AUDIOTOK_VERSION = 1


@dataclass
class Checkpoint:
    """Weights read from disk, under our key names.

    Attributes:
        path: Where they were read from.
        format: ``encodec``, ``hf``, ``audiocraft`` or ``audiotok``.
        state: The state dict, float32, our key names; empty for a pointer.
        config: The architecture, or None when the file does not say (``encodec`` format).
        card: Extra fields of an ``audiotok`` card (name, default bandwidth, provenance).
        pointer: For an audiocraft file that only names another model (``'pretrained'``).
        priors: Static entropy-coder priors ``[n_q, bins]`` shipped with an audiotok card.
    """

    path: Path
    format: str
    state: dict[str, torch.Tensor]
    config: CodecConfig | None = None
    card: dict[str, Any] | None = None
    pointer: str | None = None
    priors: torch.Tensor | None = None


def _read_hf_dir(directory: Path) -> Checkpoint:
    config = config_from_hf(read_json(directory / "config.json"))
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            weights = directory / name
            break
    else:
        raise CheckpointError(
            f"{directory}: has config.json but no model.safetensors or pytorch_model.bin"
        )
    raw = load_safetensors(weights) if weights.suffix == ".safetensors" else load_torch(weights)
    checkpoint = hf_checkpoint(config, raw, weights)
    checkpoint.path = directory
    return checkpoint


def hf_checkpoint(config: CodecConfig, raw: dict[str, Any], where: Path) -> Checkpoint:
    """A transformers ``EncodecModel``'s state dict, under our names.

    Args:
        config: Its architecture (:func:`~audiotok.zoo.codec_convert.config_from_hf`).
        raw: Its state dict under transformers' keys (bundles, such as MusicGen's
            ``audio_encoder.*``, pass their sub-dict with the prefix removed).
        where: The file named in error messages and recorded as the checkpoint's path.
    """
    raw = float_state(raw, where)
    ours = set(expected_shapes(config))
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = hf_key_to_ours(key, ours)
        if name is None:
            raise CheckpointError(f"{where}: unexpected transformers EnCodec key {key!r}")
        state[name] = value
    return Checkpoint(where, "hf", state, config)


def _read_audiocraft(path: Path, pkg: dict[str, Any]) -> Checkpoint:
    if "pretrained" in pkg and "best_state" not in pkg:
        return Checkpoint(path, "audiocraft", {}, pointer=str(pkg["pretrained"]))
    cfg = pkg.get("xp.cfg")
    if not isinstance(cfg, str):
        raise CheckpointError(f"{path}: audiocraft checkpoint without its YAML config ('xp.cfg')")
    state = pkg["best_state"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint rather than an export
    return Checkpoint(path, "audiocraft", float_state(state, path), config_from_audiocraft(cfg))


def _read_audiotok(card_path: Path) -> Checkpoint:
    card = read_json(card_path)
    if card.get("format") != AUDIOTOK_FORMAT:
        raise CheckpointError(
            f"{card_path}: not an audiotok codec card (format {card.get('format')!r})"
        )
    card_version(card, AUDIOTOK_VERSION, card_path)
    try:
        config = CodecConfig.from_dict(card["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{card_path}: bad codec config ({exc})") from None
    weights = card_file(card, "weights", card_path.stem + ".safetensors", card_path)
    if not weights.is_file():
        raise CheckpointError(f"{card_path}: its weights file {weights.name} is missing")
    state = load_safetensors(weights)
    priors = state.pop(PRIORS_KEY, None)
    state = float_state(state, weights)
    if card.get("inference_only"):
        state = _with_training_buffers(state)
    return Checkpoint(card_path, "audiotok", state, config, card=card, priors=priors)


def _with_training_buffers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adds the codebooks' training statistics an inference-only export leaves out.

    Inference reads only ``embed``; ``embed_avg`` and ``cluster_size`` (as big as the
    codebooks themselves) matter to training alone, so exports drop them to halve the file.
    """
    full = dict(state)
    for key, embed in state.items():
        if key.endswith("._codebook.embed"):
            prefix = key[: -len("embed")]
            full.setdefault(prefix + "embed_avg", embed.clone())
            full.setdefault(prefix + "cluster_size", torch.ones(embed.shape[0]))
            full.setdefault(prefix + "inited", torch.ones(1))
    return full


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint in any supported format, detected from the path and contents.

    Raises:
        CheckpointError: Missing, unreadable, or not a codec checkpoint; the message starts
            with the path.
    """
    path = Path(path)
    try:
        return _read_checkpoint(path)
    except CheckpointError as exc:
        if str(exc).startswith(str(path)):
            raise
        # Errors of the configs ("config.json describes a 'musicgen' model") name no file.
        raise CheckpointError(f"{path}: {exc}") from None


def _read_checkpoint(path: Path) -> Checkpoint:
    if path.is_dir():
        # An official MusicGen snapshot holds a MusicGen config.json and the codec's
        # compression_state_dict.bin: the codec is the latter.
        if (path / "config.json").is_file() and not (
            (path / "compression_state_dict.bin").is_file()
            and read_json(path / "config.json").get("model_type") != "encodec"
        ):
            return _read_hf_dir(path)
        if (path / "compression_state_dict.bin").is_file():
            return read_checkpoint(path / "compression_state_dict.bin")
        cards = sorted(path.glob("*.json"))
        if len(cards) == 1:
            return _read_audiotok(cards[0])
        if (path / "codec.json").is_file():  # a generator's export: lm.json and its codec's
            return _read_audiotok(path / "codec.json")
        raise CheckpointError(
            f"{path}: a directory without config.json (transformers), compression_state_dict.bin "
            "(audiocraft), codec.json or one audiotok .json card"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: {not_a_file(path)}")
    if path.suffix == ".json":
        if path.name == "config.json":
            return _read_hf_dir(path.parent)
        return _read_audiotok(path)
    if path.suffix == ".safetensors":
        if path.with_suffix(".json").is_file():
            return _read_audiotok(path.with_suffix(".json"))
        if (path.parent / "config.json").is_file():
            return _read_hf_dir(path.parent)
        raise CheckpointError(
            f"{path}: safetensors weights without their .json card or config.json"
        )
    pkg = load_torch(path)
    if isinstance(pkg, dict) and ("xp.cfg" in pkg or "pretrained" in pkg or "best_state" in pkg):
        return _read_audiocraft(path, pkg)
    state = float_state(pkg, path)
    if any(k.startswith("encoder.layers.") for k in state):
        raise CheckpointError(
            f"{path}: transformers weights; load their directory, with config.json"
        )
    return Checkpoint(path, "encodec", state)


def expected_shapes(config: CodecConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of a model of this architecture (built on no device)."""
    return module_shapes(EncodecModel, config)


def state_mismatch(config: CodecConfig, state: dict[str, torch.Tensor]) -> str | None:
    """Why ``state`` does not fit ``config`` (one line), or None when it fits."""
    return shape_mismatch(expected_shapes(config), state)


def recognise(checkpoint: Checkpoint) -> ModelCard | None:
    """The registry card whose architecture the checkpoint has.

    The official ``encodec`` file names (``encodec_24khz-d7cc33bc.th``) decide first; else the
    first card whose config the checkpoint equals (when it states one) or whose tensor shapes
    it has (when it does not).
    """
    for card in CARDS:
        if checkpoint.path.name.startswith(card.name + "-") and not state_mismatch(
            card.config, checkpoint.state
        ):
            return card
    for card in CARDS:
        if checkpoint.config is not None:
            if checkpoint.config == card.config:
                return card
        elif not state_mismatch(card.config, checkpoint.state):
            return card
    return None


def build_model(config: CodecConfig, state: dict[str, torch.Tensor], where: str) -> EncodecModel:
    """A model of architecture ``config`` holding the weights ``state``, in eval mode.

    Raises:
        CheckpointError: The weights don't fit the architecture; the message says how.
    """
    problem = state_mismatch(config, state)
    if problem:
        raise CheckpointError(f"{where}: weights don't fit the architecture ({problem})")
    return adopt_state(EncodecModel, config, state)


def save_checkpoint(
    model: EncodecModel,
    card_path: str | os.PathLike,
    *,
    name: str,
    default_bandwidth: float | None = None,
    entropy_priors: Any = None,
    inference_only: bool = False,
    half: bool = False,
    overwrite: bool = False,
    **extra: Any,
) -> Path:
    """Writes a model in our format: ``NAME.json`` (the card) + ``NAME.safetensors``.

    Args:
        model: The model to save.
        card_path: The card's path; the weights go beside it with suffix ``.safetensors``.
        name: The model id that tokens made by it will carry.
        default_bandwidth: kbps used when none is given.
        entropy_priors: Static entropy-coder priors ``[n_q, bins]`` (integer counts), or None.
        inference_only: Leave out the codebooks' training statistics (``embed_avg``,
            ``cluster_size``, ``inited``); loading fills them in. Halves the codebooks' size.
        half: Store floating-point tensors as float16 (loaded back as float32): the model
            then *is* the float16-rounded weights, so evaluate it after export.
        overwrite: Replace existing files.
        **extra: More JSON-serialisable card fields (licence, training data, metrics...).

    Returns:
        The card's path.
    """
    from safetensors.torch import save

    card_path = Path(card_path)
    if card_path.suffix == ".safetensors":  # the weights' name given: the card beside them
        card_path = card_path.with_suffix(".json")
    elif card_path.suffix != ".json":  # "model.v2" is a name, not model + suffix ".v2"
        card_path = card_path.with_name(card_path.name + ".json")
    weights_path = card_path.with_suffix(".safetensors")
    for p in (card_path, weights_path):
        if p.exists() and not overwrite:
            raise exists_error(p, CheckpointError)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if inference_only:
        training = ("._codebook.embed_avg", "._codebook.cluster_size", "._codebook.inited")
        state = {k: v for k, v in state.items() if not k.endswith(training)}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    if entropy_priors is not None:
        state[PRIORS_KEY] = torch.as_tensor(entropy_priors, dtype=torch.int32).contiguous()
    card_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights_path, overwrite=True, error=CheckpointError) as tmp:
        # Bytes into the prepared file: it keeps the umask's mode (save_file makes it 0600).
        tmp.write_bytes(save(state))
        card = {
            "format": AUDIOTOK_FORMAT,
            "version": AUDIOTOK_VERSION,
            "name": name,
            "config": model.config.to_dict(),
            "default_bandwidth": default_bandwidth,
            "weights": weights_path.name,
            "sha256": sha256_file(tmp),
            "inference_only": inference_only,
            **extra,
        }
    with atomic_path(card_path, overwrite=True, error=CheckpointError) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card_path
