"""Exporting a fine-tuned model: audiotok's format, audiocraft's, and LoRA adapters apart.

``RUN/export/`` gets, as the recipe's ``export`` section says::

    audiotok/     lm.json + lm.safetensors + codec card + T5 tokenizer
                  (:mod:`audiotok.zoo.lm_native`; safetensors and JSON only)
    audiocraft/   state_dict.bin + compression_state_dict.bin, as audiocraft's ``export_lm``
                  and ``export_encodec`` lay them out
    lora/         adapter_model.safetensors + adapter_config.json (LoRA runs only), and
                  trained.safetensors: the other weights the run trained (projections,
                  train_layers), which the adapters alone would lack

Both model folders hold the merged weights and load with ``MusicGen.get_pretrained(DIR)``
(``AudioGen`` for 16 kHz models) and ``audiotok generate -m DIR``; the audiocraft one also
with audiocraft's own ``MusicGen.get_pretrained(DIR)``. The folder is written beside its
place and renamed into it, so a half-written export is never seen under its name.

The audiocraft files are the one place we write pickles: audiocraft reads nothing else.
They are ``torch.save`` of plain dicts of tensors, strings, numbers and booleans, which
``torch.load(path, weights_only=True)`` reads.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml

from .. import __version__
from ..codec.base import Codec
from ..generate.conditioners import ConditionProvider, TextConditioner
from ..generate.lm_config import LMConfig
from ..generate.load import codec_file, read_lm_checkpoint
from ..runtime.files import atomic_path
from ..zoo.codec_cards import find_card
from ..zoo.codec_checkpoints import save_checkpoint
from ..zoo.hub import find_local
from ..zoo.lm_checkpoints import COMPRESSION_FILE, CONDITIONER_PREFIX, LM_FILE
from ..zoo.lm_native import (
    CARD_NAME,
    CODEC_CARD,
    LM_FORMAT,
    LM_VERSION,
    WEIGHTS_NAME,
    t5_tensors,
)
from ..zoo.weights import load_torch
from .config import FinetuneConfig, FinetuneError
from .lora import has_lora, merged_state, save_adapter

EXPORT_DIR = "export"


def audiocraft_yaml(config: LMConfig, cfg_dropout: float = 0.3) -> str:
    """An ``xp.cfg`` for ``config`` with the keys audiocraft's ``builders.get_lm_model`` and
    :func:`~audiotok.zoo.lm_checkpoints.config_from_audiocraft` read (for bases that were not
    audiocraft exports; an audiocraft base's own ``xp.cfg`` is kept instead)."""
    conditioners = {}
    for c in config.conditioners:
        if not c.is_text:
            raise FinetuneError(f"no audiocraft config for the {c.model} conditioner")
        conditioners[c.name] = {"model": "t5", "t5": {"name": c.t5_name, "finetune": False,
                                "word_dropout": 0.0, "normalize_text": False}}  # fmt: skip
    cfg: dict[str, Any] = {
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": config.sample_rate,
        "channels": config.channels,
        "lm_model": "transformer_lm",
        "codebooks_pattern": {
            "modeling": config.pattern,
            "delay": {
                "delays": list(config.delays),
                "flatten_first": config.flatten_first,
                "empty_initial": config.empty_initial,
            },
            "parallel": {"empty_initial": config.empty_initial},
        },
        "transformer_lm": {
            "dim": config.dim,
            "num_heads": config.num_heads,
            "num_layers": config.num_layers,
            "hidden_scale": config.hidden_scale,
            "n_q": config.n_q,
            "card": config.card,
            "dropout": 0.0,
            "emb_lr": None,
            "activation": config.activation,
            "norm_first": config.norm_first,
            "bias_ff": config.bias_ff,
            "bias_attn": config.bias_attn,
            "bias_proj": config.bias_proj,
            "past_context": None,
            "causal": True,
            "custom": False,
            "memory_efficient": True,
            "attention_as_float32": False,
            "layer_scale": config.layer_scale,
            "positional_embedding": config.positional_embedding,
            "xpos": False,
            "checkpointing": "none",
            "weight_init": None,
            "depthwise_init": None,
            "zero_bias_init": False,
            "norm": config.norm,
            "cross_attention": config.cross_attention,
            "qk_layer_norm": False,
            "qk_layer_norm_cross": False,
            "attention_dropout": None,
            "kv_repeat": 1,
            "two_step_cfg": config.two_step_cfg,
            "max_period": config.max_period,
            "positional_scale": config.positional_scale,
        },
        "classifier_free_guidance": {
            "training_dropout": cfg_dropout,
            "inference_coef": config.cfg_coef,
        },
        "attribute_dropout": {},
        "fuser": {
            "cross_attention_pos_emb": config.cross_attention_pos_emb,
            "cross_attention_pos_emb_scale": config.cross_attention_pos_emb_scale,
            "sum": [],
            "prepend": list(config.fuse_prepend),
            "cross": list(config.fuse_cross),
            "input_interpolate": [],
        },
        "conditioners": conditioners,
        "dataset": {"segment_duration": config.segment_duration},
        "interleave_stereo_codebooks": {
            "use": config.stereo_interleave,
            "per_timestep": config.stereo_per_timestep,
        },
    }
    if config.compression_n_q is not None:
        cfg["compression_model_n_q"] = config.compression_n_q
    return yaml.safe_dump(cfg, sort_keys=False)


def _text_modules(conditioner: ConditionProvider) -> list[TextConditioner]:
    return [conditioner.conditioners[n] for n in conditioner.text_names]


def full_state(lm: torch.nn.Module, conditioner: ConditionProvider) -> dict[str, torch.Tensor]:
    """The merged LM weights and the projections, under audiocraft's ``best_state`` keys."""
    state = merged_state(lm)
    for name in conditioner.text_names + conditioner.wav_names:
        proj = conditioner.conditioners[name].output_proj
        for key, value in proj.state_dict().items():
            state[f"{CONDITIONER_PREFIX}{name}.output_proj.{key}"] = value.detach().float().cpu()
    return {k: v.contiguous() for k, v in state.items()}


def write_audiotok(
    directory: Path,
    state: dict[str, torch.Tensor],
    config: LMConfig,
    codec: Codec,
    conditioner: ConditionProvider,
    bundle_text_encoder: bool,
    provenance: dict[str, Any],
) -> None:
    """Writes audiotok's format (:mod:`audiotok.zoo.lm_native`) into ``directory``."""
    from safetensors.torch import save

    directory.mkdir(parents=True, exist_ok=True)
    tensors = dict(state)
    texts = _text_modules(conditioner)
    t5_config = None
    if bundle_text_encoder and texts:
        tensors.update(t5_tensors(texts[0].t5))
        t5_config = texts[0].t5.config.to_dict()
    if texts:
        texts[0].tokenizer.save(directory)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        tmp.write_bytes(save(tensors))
    save_checkpoint(_card_model(codec), directory / CODEC_CARD, name=codec.model_id,
                    default_bandwidth=codec.default_bandwidth)  # fmt: skip
    card = {
        "format": LM_FORMAT,
        "version": LM_VERSION,
        "config": config.to_dict(),
        "weights": WEIGHTS_NAME,
        "codec": CODEC_CARD,
        "text_encoder": t5_config,
        "audiotok_version": __version__,
        **provenance,
    }
    with atomic_path(directory / CARD_NAME) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def write_audiocraft(
    directory: Path,
    state: dict[str, torch.Tensor],
    config: LMConfig,
    codec: Codec,
    base: Any,
    cfg_dropout: float,
) -> None:
    """Writes ``state_dict.bin`` and ``compression_state_dict.bin`` into ``directory``.

    Args:
        directory: The folder.
        state: :func:`full_state`.
        config: The LM's config.
        codec: The LM's codec.
        base: The base checkpoint (:class:`~audiotok.zoo.lm_checkpoints.LMCheckpoint`): an
            audiocraft base lends its ``xp.cfg`` and its codec file.
        cfg_dropout: The recipe's, for a generated ``xp.cfg``.

    Raises:
        FinetuneError: No audiocraft codec file for this codec
            (:func:`write_audiocraft_codec`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    xp_cfg = None
    if base.format == "audiocraft":
        raw = load_torch(Path(base.path))
        xp_cfg = raw.get("xp.cfg") if isinstance(raw.get("xp.cfg"), str) else None
    if xp_cfg is None:
        xp_cfg = audiocraft_yaml(config, cfg_dropout)
    # Plain containers of tensors, str, bool only: torch.load(weights_only=True) reads it.
    package = {"xp.cfg": xp_cfg, "best_state": state, "version": f"audiotok-{__version__}",
               "exported": True}  # fmt: skip
    with atomic_path(directory / LM_FILE) as tmp:
        torch.save(package, tmp)
    write_audiocraft_codec(directory / COMPRESSION_FILE, codec, base)


def write_audiocraft_codec(target: Path, codec: Codec, base: Any) -> None:
    """Writes the ``compression_state_dict.bin`` that audiocraft loads beside the LM, as
    :func:`audiocraft_codec` decides from ``base.codec_path``.

    Raises:
        FinetuneError: No audiocraft file for this codec.
    """
    source = audiocraft_codec(codec, base.codec_path)
    with atomic_path(target) as tmp:
        if isinstance(source, Path):
            shutil.copyfile(source, tmp)
        else:
            torch.save({"pretrained": source}, tmp)


def audiocraft_codec(codec: Codec, codec_path: Path | None) -> Path | str:
    """What the audiocraft export's ``compression_state_dict.bin`` will be: a file to copy
    (:class:`Path`) or the Hub id audiocraft's pointer names (``str``).

    An audiocraft base's own file (``codec_path``, named ``compression_state_dict.bin``) is
    copied; a codec with a Hub repository of its own (``facebook/encodec_32khz``) gets
    audiocraft's pointer to it; AudioGen's 16 kHz codec, which has none, is copied from
    ``facebook/audiogen-medium``'s file where that is cached. The one decision for the export
    and for the check when a run starts (:func:`check_export`).

    Raises:
        FinetuneError: None of these: not a registry codec, or its file is not cached.
    """
    if codec_path is not None and Path(codec_path).name == COMPRESSION_FILE:
        return Path(codec_path)
    card = find_card(codec.model_id)
    hub_id = None if card is None else f"facebook/{card.name}"
    if card is not None and any(s.format == "hf" and s.repo_id == hub_id for s in card.sources):
        # audiocraft's own pointer to a pretrained codec: its CompressionModel.get_pretrained
        # loads a Hub id through transformers' EncodecModel (audiocraft's released exports
        # of these codecs hold the same weights).
        return str(hub_id)
    # No Hub repository of its own (AudioGen's 16 kHz codec lives in audiogen-medium's
    # compression_state_dict.bin): copy that file where it is cached.
    packaged = [s for s in card.sources if s.format == "audiocraft"] if card else []
    found = find_local(SimpleNamespace(sources=packaged)) if packaged else None
    if found is None:
        where = f" ({packaged[0].repo_id}'s {COMPRESSION_FILE} is not cached)" if packaged else ""
        raise FinetuneError(
            f"the codec {codec.model_id} has no audiocraft file to export beside the LM"
            f"{where}; use export.formats: [audiotok]"
        )
    return Path(found[1])


def _card_model(codec: Codec) -> Any:
    """The codec's torch model, which the audiotok export writes as a codec card."""
    model = getattr(codec, "model", None)
    if model is None:
        raise FinetuneError(f"the codec {codec.model_id} can't be written as a card")
    return model


def check_export(config: FinetuneConfig, codec: Codec, base: Path) -> None:
    """Refuses, when a run starts, an ``export.formats`` that the export could not write, by
    the export's own decisions: said after training, it would cost the user the run.

    Args:
        config: The recipe.
        codec: The LM's codec.
        base: The base checkpoint's path (:func:`base_path`).

    Raises:
        FinetuneError: The message the export would give.
    """
    if "audiotok" in config.export.formats:
        _card_model(codec)
    if "audiocraft" in config.export.formats:
        audiocraft_codec(codec, codec_file(base))


def export_run(run: Any, force: bool = False) -> Path:
    """Writes ``RUN/export/`` for a :class:`~audiotok.finetune.loop.FinetuneRun`.

    Raises:
        FinetuneError: The export exists and ``force`` is not set; a format can't be written.
    """
    config = run.config
    target = run.run_dir / EXPORT_DIR
    if target.exists() and not force:
        raise FinetuneError(f"{target}: already exists; pass force=True to replace it").for_cli(
            f"{target}: already exists; use -f/--force to replace it"
        )
    staging = run.run_dir / f".{EXPORT_DIR}.{secrets.token_hex(4)}.tmp"
    provenance = {
        "finetune": {
            "base": config.base, "step": run.step, "recipe": config.to_dict(),
            "valid": run.last_valid, "lora": config.lora.rank > 0,
        }
    }  # fmt: skip
    try:
        state = full_state(run.lm, run.conditioner)
        if "audiotok" in config.export.formats:
            write_audiotok(staging / "audiotok", state, run.lm_config, run.codec,
                           run.conditioner, config.export.bundle_text_encoder,
                           provenance)  # fmt: skip
        if "audiocraft" in config.export.formats:
            base = read_lm_checkpoint(base_path(config))
            write_audiocraft(staging / "audiocraft", state, run.lm_config, run.codec, base,
                             config.cfg_dropout)  # fmt: skip
        if has_lora(run.lm) and config.export.keep_adapter:
            trained = {n: p for n, p in run.model.named_parameters()
                       if p.requires_grad and "lora_" not in n}  # fmt: skip
            save_adapter(run.lm, config.lora, staging / "lora", trained)
        old = None
        if target.exists():
            old = target.with_name(f".{EXPORT_DIR}.old.{secrets.token_hex(4)}")
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def base_path(config: FinetuneConfig) -> Path:
    """Where the base's files are: the local path, or the registry model's cached copy."""
    from ..zoo import hub
    from ..zoo.lm_cards import find_generation_card

    card = find_generation_card(config.base)
    if card is not None:
        return Path(hub.fetch(card, progress=False)[1])
    return Path(config.base)
