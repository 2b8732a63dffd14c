"""Translations from other implementations' checkpoints to ours.

Two foreign layouts hold EnCodec weights under other names or with the architecture written
in another vocabulary:

* Hugging Face transformers (``config.json`` + ``model.safetensors``): keys such as
  ``encoder.layers.1.block.1.conv.parametrizations.weight.original0`` for our
  ``encoder.model.1.block.1.conv.conv.weight_g``; the architecture in ``EncodecConfig`` terms.
* audiocraft exports (``compression_state_dict.bin``): our key names already (audiocraft's
  modules are the ``encodec`` package's), but the architecture is a Hydra config dumped as
  YAML, with ``${...}`` interpolations left unresolved (read by :mod:`.interpolation`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..codec.config import CodecConfig
from ..errors import CheckpointError
from .interpolation import ConfigView

# transformers' EncodecConfig defaults, for keys a config.json leaves out.
HF_DEFAULTS: dict[str, Any] = {
    "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0],
    "sampling_rate": 24_000,
    "audio_channels": 1,
    "normalize": False,
    "chunk_length_s": None,
    "overlap": None,
    "hidden_size": 128,
    "num_filters": 32,
    "num_residual_layers": 1,
    "upsampling_ratios": [8, 5, 4, 2],
    "norm_type": "weight_norm",
    "kernel_size": 7,
    "last_kernel_size": 7,
    "residual_kernel_size": 3,
    "dilation_growth_rate": 2,
    "use_causal_conv": True,
    "pad_mode": "reflect",
    "compress": 2,
    "num_lstm_layers": 2,
    "trim_right_ratio": 1.0,
    "codebook_size": 1024,
    "codebook_dim": None,
    "use_conv_shortcut": True,
}


def config_from_hf(hf: dict[str, Any]) -> CodecConfig:
    """Our config for a transformers ``EncodecConfig`` dict (``config.json``)."""
    if hf.get("model_type", "encodec") != "encodec":
        raise CheckpointError(
            f"config.json describes a {hf.get('model_type')!r} model, not encodec"
        )
    c = {**HF_DEFAULTS, **hf}
    if c["codebook_dim"] not in (None, c["hidden_size"]):
        raise CheckpointError("codebook_dim != hidden_size (projected codebooks) is not supported")
    hop = math.prod(c["upsampling_ratios"])
    frame_rate = math.ceil(c["sampling_rate"] / hop)
    bits = math.ceil(math.log2(c["codebook_size"]))
    n_q = int(1000 * c["target_bandwidths"][-1] // (frame_rate * bits))
    try:
        return CodecConfig(
            sample_rate=c["sampling_rate"],
            channels=c["audio_channels"],
            causal=c["use_causal_conv"],
            norm=c["norm_type"],
            pad_mode=c["pad_mode"],
            dimension=c["hidden_size"],
            n_filters=c["num_filters"],
            n_residual_layers=c["num_residual_layers"],
            ratios=tuple(c["upsampling_ratios"]),
            kernel_size=c["kernel_size"],
            last_kernel_size=c["last_kernel_size"],
            residual_kernel_size=c["residual_kernel_size"],
            dilation_base=c["dilation_growth_rate"],
            compress=c["compress"],
            lstm=c["num_lstm_layers"],
            true_skip=not c["use_conv_shortcut"],
            trim_right_ratio=c["trim_right_ratio"],
            n_q=n_q,
            bins=c["codebook_size"],
            target_bandwidths=tuple(c["target_bandwidths"]),
            normalize=c["normalize"],
            segment=c["chunk_length_s"],
            overlap=0.01 if c["overlap"] is None else c["overlap"],
        )
    except ValueError as exc:
        raise CheckpointError(f"unsupported transformers EnCodec config: {exc}") from None


_HF_PARAM = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
    "weight_g": "weight_g",
    "weight_v": "weight_v",
    "weight": "weight",
    "bias": "bias",
}
_HF_LAYER = re.compile(
    r"^(encoder|decoder)\.layers\.(\d+)\.((?:block\.\d+\.|shortcut\.)?)(conv|norm|lstm)\.(.+)$"
)
_HF_CODEBOOK = re.compile(r"^quantizer\.layers\.(\d+)\.codebook\.(\w+)$")


def hf_key_to_ours(key: str, our_keys: set[str]) -> str | None:
    """Our name for a transformers EnCodec state-dict key, or None if it has none.

    Example:
        ``decoder.layers.3.conv.parametrizations.weight.original1`` is a transposed
        convolution in our tree: ``decoder.model.3.convtr.convtr.weight_v``.
    """
    if m := _HF_CODEBOOK.match(key):
        return f"quantizer.vq.layers.{m[1]}._codebook.{m[2]}"
    m = _HF_LAYER.match(key)
    if not m:
        return None
    side, index, inner, kind, rest = m.groups()
    prefix = f"{side}.model.{index}.{inner}"
    if kind == "lstm":
        return prefix + "lstm." + rest
    if kind == "norm":
        candidates = [prefix + "conv.norm." + rest, prefix + "convtr.norm." + rest]
    else:
        param = _HF_PARAM.get(rest)
        if param is None:
            return None
        candidates = [prefix + "conv.conv." + param, prefix + "convtr.convtr." + param]
    return next((c for c in candidates if c in our_keys), None)


# SEANet arguments that change how the encoder or the decoder alone is built.
_DECODER_ONLY = {"trim_right_ratio", "final_activation", "final_activation_params"}


def config_from_audiocraft(yaml_text: str) -> CodecConfig:
    """Our config for an audiocraft compression model's ``xp.cfg`` (YAML text)."""
    import yaml

    try:
        raw = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        raise CheckpointError(f"audiocraft config is not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise CheckpointError("audiocraft config is not a mapping")
    cfg = ConfigView(raw)  # references are resolved where read: ${oc.env:...} elsewhere is harmless
    if cfg.get("compression_model") != "encodec":
        if cfg.get("solver") in ("musicgen", "audiogen") or cfg.get("lm_model"):
            raise CheckpointError(
                "an audiocraft language model (MusicGen or AudioGen), not a codec; its codec "
                "is compression_state_dict.bin beside it"
            )
        raise CheckpointError(
            f"audiocraft compression model {cfg.get('compression_model')!r} is not supported "
            "(only encodec)"
        )
    enc, rvq = cfg.get("encodec", {}), cfg.get("rvq", {})
    if enc.get("autoencoder") != "seanet" or enc.get("quantizer") != "rvq":
        raise CheckpointError(
            "audiocraft encodec must use the seanet autoencoder and rvq quantizer"
        )
    seanet = dict(cfg.get("seanet", {}))
    encoder_over, decoder_over = seanet.pop("encoder", {}) or {}, seanet.pop("decoder", {}) or {}
    shared_over = {k: v for k, v in encoder_over.items() if k not in _DECODER_ONLY}
    if any(decoder_over.get(k, v) != v for k, v in shared_over.items()) or (
        set(decoder_over) - _DECODER_ONLY - set(shared_over)
    ):
        raise CheckpointError(
            "audiocraft configs with different encoder and decoder shapes are not supported"
        )
    seanet.update(shared_over)
    seanet.update(decoder_over)
    if seanet.get("activation", "ELU") != "ELU" or seanet.get("norm_params"):
        raise CheckpointError("only ELU activations and norms without parameters are supported")
    if seanet.get("final_activation_params"):
        raise CheckpointError("final activations with parameters are not supported")
    sample_rate, bins, n_q = (
        int(enc["sample_rate"]),
        int(rvq.get("bins", 1024)),
        int(rvq.get("n_q", 8)),
    )
    ratios = tuple(seanet.get("ratios", (8, 5, 4, 2)))
    kbps = math.log2(bins) * math.ceil(sample_rate / math.prod(ratios)) / 1000
    # Without quantizer dropout the decoder was only trained on all codebooks.
    counts = range(1, n_q + 1) if rvq.get("q_dropout") else [n_q]
    try:
        return CodecConfig(
            sample_rate=sample_rate,
            channels=int(enc["channels"]),
            causal=bool(enc.get("causal", False)),
            norm=seanet.get("norm", "none"),
            pad_mode=seanet.get("pad_mode", "reflect"),
            dimension=seanet.get("dimension", 128),
            n_filters=seanet.get("n_filters", 32),
            n_residual_layers=seanet.get("n_residual_layers", 3),
            ratios=ratios,
            kernel_size=seanet.get("kernel_size", 7),
            last_kernel_size=seanet.get("last_kernel_size", 7),
            residual_kernel_size=seanet.get("residual_kernel_size", 3),
            dilation_base=seanet.get("dilation_base", 2),
            compress=seanet.get("compress", 2),
            lstm=seanet.get("lstm", 0),
            true_skip=seanet.get("true_skip", True),
            trim_right_ratio=seanet.get("trim_right_ratio", 1.0),
            final_activation=seanet.get("final_activation"),
            disable_norm_outer_blocks=seanet.get("disable_norm_outer_blocks", 0),
            activation_alpha=float((seanet.get("activation_params") or {}).get("alpha", 1.0)),
            n_q=n_q,
            bins=bins,
            target_bandwidths=tuple(round(k * kbps, 6) for k in counts),
            normalize=bool(enc.get("renormalize", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"unsupported audiocraft EnCodec config: {exc}") from None
