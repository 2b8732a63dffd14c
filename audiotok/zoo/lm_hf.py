"""transformers' MusicGen checkpoints (``MusicgenForConditionalGeneration``, and
``MusicgenMelodyForConditionalGeneration``), in our layout.

transformers splits each attention's packed projection into ``q_proj``, ``k_proj`` and
``v_proj`` and names the layers BART-style; the translation::

    decoder.model.decoder.embed_tokens.{k}      -> emb.{k}
    decoder.model.decoder.layers.{i}.X          -> transformer.layers.{i}.Y, with X -> Y:
        self_attn.{q,k,v}_proj                  -> self_attn.in_proj_weight (stacked q, k, v)
        self_attn.out_proj                      -> self_attn.out_proj
        encoder_attn.{q,k,v}_proj               -> cross_attention.in_proj_weight
        encoder_attn.out_proj                   -> cross_attention.out_proj
        self_attn_layer_norm                    -> norm1
        encoder_attn_layer_norm                 -> norm_cross
        final_layer_norm                        -> norm2
        fc1, fc2                                -> linear1, linear2
    decoder.model.decoder.layer_norm            -> out_norm
    decoder.lm_heads.{k}                        -> linears.{k}
    enc_to_dec_proj                             -> the text conditioner's output_proj
    audio_enc_to_dec_proj (melody)              -> the chroma conditioner's output_proj
    text_encoder.*                              -> the T5 encoder
    audio_encoder.*                             -> the codec (read by load_codec)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..generate.lm_config import ConditionerConfig, LMConfig
from .lm_checkpoints import LMCheckpoint
from .weights import float_state, load_torch, read_json

# transformers' MusicgenDecoderConfig defaults, for keys a config.json leaves out.
HF_DECODER_DEFAULTS: dict[str, Any] = {
    "vocab_size": 2048,
    "num_hidden_layers": 24,
    "ffn_dim": 4096,
    "num_attention_heads": 16,
    "activation_function": "gelu",
    "hidden_size": 1024,
    "num_codebooks": 4,
    "audio_channels": 1,
    "cross_attention_hidden_size": None,
}
# All published MusicGen models were trained on 30 s segments; config.json does not say it.
HF_SEGMENT_DURATION = 30.0

_LAYER = re.compile(r"^decoder\.model\.decoder\.layers\.(\d+)\.(\w+)\.(.+)$")
_LAYER_PARTS = {
    "self_attn_layer_norm": "norm1",
    "encoder_attn_layer_norm": "norm_cross",
    "final_layer_norm": "norm2",
    "fc1": "linear1",
    "fc2": "linear2",
}
_ATTENTIONS = {"self_attn": "self_attn", "encoder_attn": "cross_attention"}


def config_from_hf(hf: dict[str, Any], generation: dict[str, Any] | None = None) -> LMConfig:
    """Our config for a transformers ``MusicgenConfig`` or ``MusicgenMelodyConfig`` dict.

    MusicGen cross-attends to the text; MusicGen-melody prepends the projected chromagram and
    the text to the codes (``[chroma, text, codes]``), as audiocraft's ``prepend`` fuser does.
    """
    model_type = hf.get("model_type")
    if model_type not in ("musicgen", "musicgen_melody"):
        raise CheckpointError(f"config.json describes a {model_type!r} model, not musicgen")
    melody = model_type == "musicgen_melody"
    dec = {**HF_DECODER_DEFAULTS, **(hf.get("decoder") or {})}
    text = hf.get("text_encoder") or {}
    audio = hf.get("audio_encoder") or {}
    n_q, dim, channels = int(dec["num_codebooks"]), int(dec["hidden_size"]), dec["audio_channels"]
    sample_rate = int(audio.get("sampling_rate", 24_000))
    if int(dec["ffn_dim"]) % dim:
        raise CheckpointError(f"ffn_dim {dec['ffn_dim']} is not a multiple of {dim}")
    text_conditioner = ConditionerConfig(
        "description", "t5", int(text.get("d_model", 512)), str(text.get("_name_or_path") or "t5")
    )
    conditioners: tuple[ConditionerConfig, ...] = (text_conditioner,)
    if melody:
        n_chroma = int(hf.get("num_chroma", 12))
        # transformers' feature extractor: 16384-point STFT (radix2_exp 14), argmax chroma.
        chroma_length = hf.get("chroma_length")  # the published models': 235
        chroma = ConditionerConfig(
            "self_wav", "chroma_stem", n_chroma, sample_rate=sample_rate, n_chroma=n_chroma,
            chroma_length=None if chroma_length is None else int(chroma_length),
        )  # fmt: skip
        conditioners = (chroma, text_conditioner)
    try:
        return LMConfig(
            n_q=n_q,
            card=int(dec["vocab_size"]),
            dim=dim,
            num_heads=int(dec["num_attention_heads"]),
            num_layers=int(dec["num_hidden_layers"]),
            hidden_scale=int(dec["ffn_dim"]) / dim,
            norm_first=True,
            activation=str(dec["activation_function"]),
            bias_proj=False,
            bias_ff=False,
            bias_attn=False,
            cross_attention=not melody,
            conditioners=conditioners,
            fuse_cross=() if melody else ("description",),
            fuse_prepend=("self_wav", "description") if melody else (),
            cfg_coef=float((generation or {}).get("guidance_scale") or 3.0),
            # Stereo models interleave L/R codebooks: each pair shares a delay.
            delays=tuple(k // 2 for k in range(n_q)) if channels == 2 else tuple(range(n_q)),
            sample_rate=sample_rate,
            channels=int(channels),
            segment_duration=HF_SEGMENT_DURATION,
            stereo_interleave=channels == 2,
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"unsupported transformers MusicGen config: {exc}") from None


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(read_json(index).get("weight_map", {}).values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    elif (directory / "pytorch_model.bin").is_file():
        return float_state(load_torch(directory / "pytorch_model.bin"), directory)
    else:
        raise CheckpointError(f"{directory}: has config.json but no model.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            state.update(load_file(str(directory / name)))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{directory / name}: not readable safetensors ({exc})") from None
    return float_state(state, directory)


def _decoder_key(key: str) -> str | None:
    """Our key for a transformers decoder key (q/k/v projections excepted), or None."""
    if found := re.fullmatch(r"decoder\.model\.decoder\.embed_tokens\.(\d+)\.weight", key):
        return f"emb.{found[1]}.weight"
    if found := re.fullmatch(r"decoder\.lm_heads\.(\d+)\.(weight|bias)", key):
        return f"linears.{found[1]}.{found[2]}"
    if found := re.fullmatch(r"decoder\.model\.decoder\.layer_norm\.(weight|bias)", key):
        return f"out_norm.{found[1]}"
    found = _LAYER.match(key)
    if not found:
        return None
    layer, part, rest = found.groups()
    prefix = f"transformer.layers.{layer}."
    if part in _LAYER_PARTS:
        return prefix + f"{_LAYER_PARTS[part]}.{rest}"
    if part in _ATTENTIONS and rest.startswith("out_proj."):
        return prefix + f"{_ATTENTIONS[part]}.{rest}"
    return None


def _pack_attention(raw: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> set[str]:
    """Packs each attention's q, k, v projections into ``in_proj_weight`` / ``in_proj_bias``.

    Returns:
        The transformers keys consumed.
    """
    used = set()
    pattern = re.compile(
        r"^(decoder\.model\.decoder\.layers\.(\d+)\.(\w+))\.q_proj\.(weight|bias)$"
    )
    for key in list(raw):
        found = pattern.match(key)
        if not found or found[3] not in _ATTENTIONS:
            continue
        base, layer, part, kind = found.groups()
        names = [f"{base}.{p}_proj.{kind}" for p in "qkv"]
        missing = [n for n in names if n not in raw]
        if missing:
            raise CheckpointError(f"transformers MusicGen weights lack {missing[0]}")
        ours = f"transformer.layers.{layer}.{_ATTENTIONS[part]}.in_proj_{kind}"
        state[ours] = torch.cat([raw[n] for n in names])
        used.update(names)
    return used


def read_hf_dir(directory: Path) -> LMCheckpoint:
    """Reads a transformers MusicGen directory into the LM's, T5's and codec's weights."""
    hf = read_json(directory / "config.json")
    generation_file = directory / "generation_config.json"
    generation = read_json(generation_file) if generation_file.is_file() else None
    try:
        config = config_from_hf(hf, generation)
    except CheckpointError as exc:
        raise CheckpointError(f"{directory}: {exc}") from None
    raw = _read_weights(directory)
    lm_state: dict[str, torch.Tensor] = {}
    used = _pack_attention(raw, lm_state)
    t5_state: dict[str, torch.Tensor] = {}
    codec_state: dict[str, torch.Tensor] = {}
    projections: dict[str, dict[str, torch.Tensor]] = {c.name: {} for c in config.conditioners}
    for key, value in raw.items():
        if key in used or key.endswith("embed_positions.weights"):
            continue
        if key.startswith("text_encoder."):
            t5_state[key[len("text_encoder.") :]] = value
        elif key.startswith("audio_encoder."):
            codec_state[key[len("audio_encoder.") :]] = value
        elif key.startswith("enc_to_dec_proj."):
            projections["description"]["output_proj." + key[len("enc_to_dec_proj.") :]] = value
        elif key.startswith("audio_enc_to_dec_proj."):
            projections["self_wav"]["output_proj." + key[len("audio_enc_to_dec_proj.") :]] = value
        elif (ours := _decoder_key(key)) is not None:
            lm_state[ours] = value
        else:
            raise CheckpointError(f"{directory}: unexpected transformers MusicGen key {key!r}")
    for spec in config.conditioners:
        if not projections[spec.name]:
            # Without a projection (a condition as wide as the LM) transformers uses it as is.
            if spec.dim != config.dim:
                raise CheckpointError(f"{directory}: no projection for {spec.name} ({spec.dim})")
            projections[spec.name] = {
                "output_proj.weight": torch.eye(spec.dim),
                "output_proj.bias": torch.zeros(spec.dim),
            }
    return LMCheckpoint(
        path=directory,
        format="hf",
        config=config,
        lm_state=lm_state,
        conditioner_states=projections,
        codec_config={"model_type": "encodec", **(hf.get("audio_encoder") or {})},
        codec_state=codec_state,
        t5_config=hf.get("text_encoder") or {},
        t5_state=t5_state,
    )
