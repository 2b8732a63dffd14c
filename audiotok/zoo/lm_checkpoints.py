"""Reading MusicGen / AudioGen checkpoints: audiocraft exports and transformers directories.

=================  ==========================================================================
format             what it is
=================  ==========================================================================
``audiocraft``     a directory with ``state_dict.bin`` = ``{'xp.cfg': YAML (or a dict),
                   'best_state': state dict, 'version', 'exported'}`` (keys are audiocraft's,
                   hence ours) and ``compression_state_dict.bin`` (the codec, read by
                   :func:`audiotok.load_codec`); T5 comes from the Hugging Face cache by name
``hf``             a transformers MusicGen (or MusicGen-melody) directory: ``config.json`` +
                   ``model.safetensors`` (or sharded, or ``pytorch_model.bin``) holding the
                   LM (``decoder.*``, renamed by :mod:`.lm_hf`), the T5 encoder
                   (``text_encoder.*``), its projection (``enc_to_dec_proj``) and the codec
                   (``audio_encoder.*``), with the T5 tokenizer files beside them
=================  ==========================================================================

Nothing is unpickled beyond tensors and plain containers: ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..generate.lm_config import ConditionerConfig, LMConfig
from .interpolation import ConfigView
from .weights import float_state, load_torch

COMPRESSION_FILE = "compression_state_dict.bin"
LM_FILE = "state_dict.bin"
CONDITIONER_PREFIX = "condition_provider.conditioners."


@dataclass
class LMCheckpoint:
    """An LM checkpoint read from disk, split by the module each part belongs to.

    Attributes:
        path: The directory (or file) it was read from.
        format: ``audiocraft`` or ``hf``.
        config: The architecture.
        lm_state: The LM's weights under audiocraft's keys, float32.
        conditioner_states: Condition name -> its conditioner's weights (``output_proj.*``).
        codec_path: What to give :func:`audiotok.load_codec` (audiocraft format), or None.
        codec_config: transformers ``EncodecConfig`` dict of the bundled codec (hf), or None.
        codec_state: The bundled codec's transformers weights (hf), or None.
        t5_config: transformers ``T5Config`` dict of the bundled T5 encoder (hf), or None.
        t5_state: The bundled T5 encoder's weights (hf), or None.
    """

    path: Path
    format: str
    config: LMConfig
    lm_state: dict[str, torch.Tensor]
    conditioner_states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    codec_path: Path | None = None
    codec_config: dict[str, Any] | None = None
    codec_state: dict[str, torch.Tensor] | None = None
    t5_config: dict[str, Any] | None = None
    t5_state: dict[str, torch.Tensor] | None = None


# --- audiocraft ---------------------------------------------------------------------------


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def _conditioners(cfg: ConfigView, state: dict[str, torch.Tensor]) -> list[ConditionerConfig]:
    out = []
    for name in cfg.select("conditioners", None) or {}:
        if name == "args":
            continue
        model = cfg.select(f"conditioners.{name}.model")
        args = f"conditioners.{name}.{model}"
        proj = state.get(f"{CONDITIONER_PREFIX}{name}.output_proj.weight")
        if proj is None:
            raise CheckpointError(f"no weights for conditioner {name!r} ({model})")
        if model == "t5":
            if cfg.select(f"{args}.normalize_text", False):
                raise CheckpointError("T5 conditioners with normalize_text are not supported")
            t5_name = str(cfg.select(f"{args}.name"))
            out.append(ConditionerConfig(name, "t5", int(proj.shape[1]), t5_name=t5_name))
        elif model == "chroma_stem":
            out.append(
                ConditionerConfig(
                    name,
                    "chroma_stem",
                    int(proj.shape[1]),
                    sample_rate=int(cfg.select(f"{args}.sample_rate")),
                    n_chroma=int(cfg.select(f"{args}.n_chroma", 12)),
                    radix2_exp=int(cfg.select(f"{args}.radix2_exp", 12)),
                    argmax=bool(cfg.select(f"{args}.argmax", False)),
                )
            )
        else:
            raise CheckpointError(f"conditioner {name!r} of type {model!r} is not supported")
    return out


def config_from_audiocraft(raw: dict[str, Any], state: dict[str, torch.Tensor]) -> LMConfig:
    """Our config for an audiocraft LM's ``xp.cfg`` (parsed YAML) and its weights.

    Only the values read are resolved (:class:`ConfigView`), so references elsewhere in the
    config that only meant something where it trained (``${oc.env:...}``) do no harm.
    """
    cfg = ConfigView(raw)
    lm_model = cfg.select("lm_model", "transformer_lm")
    if lm_model != "transformer_lm":
        raise CheckpointError(f"audiocraft LM {lm_model!r} is not supported (transformer_lm only)")

    def t(key: str, *default: Any) -> Any:
        return cfg.select(f"transformer_lm.{key}", *default)

    unsupported = {
        "causal": (t("causal", True), True),
        "past_context": (t("past_context", None), None),
        "qk_layer_norm": (t("qk_layer_norm", False), False),
        "qk_layer_norm_cross": (t("qk_layer_norm_cross", False), False),
        "kv_repeat": (t("kv_repeat", 1), 1),
    }
    for key, (value, needed) in unsupported.items():
        if value != needed:
            raise CheckpointError(f"transformer_lm.{key} = {value!r} is not supported")
    fuser = {k: _names(cfg.select(f"fuser.{k}", ())) for k in ("sum", "input_interpolate")}
    if any(fuser.values()):
        raise CheckpointError("only the 'cross' and 'prepend' condition fusers are supported")
    fuse_cross = _names(cfg.select("fuser.cross", ()))
    n_q = int(t("n_q"))
    modeling = cfg.select("codebooks_pattern.modeling", "delay")
    if modeling == "delay":
        delays = cfg.select("codebooks_pattern.delay.delays", None) or list(range(n_q))
    elif modeling == "parallel":
        delays = [0] * n_q
    else:
        raise CheckpointError(f"codebook pattern {modeling!r} is not supported (delay, parallel)")
    try:
        return LMConfig(
            n_q=n_q,
            card=int(t("card")),
            dim=int(t("dim")),
            num_heads=int(t("num_heads")),
            num_layers=int(t("num_layers")),
            hidden_scale=float(t("hidden_scale", 4)),
            norm=str(t("norm", "layer_norm")),
            norm_first=bool(t("norm_first", False)),
            activation=str(t("activation", "gelu")),
            bias_proj=bool(t("bias_proj", True)),
            bias_ff=bool(t("bias_ff", True)),
            bias_attn=bool(t("bias_attn", True)),
            # audiocraft's builder turns cross-attention on whenever a condition is fused so.
            cross_attention=bool(fuse_cross) or bool(t("cross_attention", False)),
            layer_scale=t("layer_scale", None),
            positional_embedding=str(t("positional_embedding", "sin")),
            max_period=float(t("max_period", 10_000)),
            positional_scale=float(t("positional_scale", 1.0)),
            conditioners=tuple(_conditioners(cfg, state)),
            fuse_cross=fuse_cross,
            fuse_prepend=_names(cfg.select("fuser.prepend", ())),
            cross_attention_pos_emb=bool(cfg.select("fuser.cross_attention_pos_emb", False)),
            cross_attention_pos_emb_scale=float(
                cfg.select("fuser.cross_attention_pos_emb_scale", 1.0)
            ),
            cfg_coef=float(cfg.select("classifier_free_guidance.inference_coef", 3.0)),
            two_step_cfg=bool(t("two_step_cfg", False)),
            pattern=str(modeling),
            delays=tuple(int(d) for d in delays),
            flatten_first=int(cfg.select("codebooks_pattern.delay.flatten_first", 0)),
            empty_initial=int(cfg.select("codebooks_pattern.delay.empty_initial", 0)),
            sample_rate=int(cfg.select("sample_rate")),
            channels=int(cfg.select("channels", 1)),
            segment_duration=float(cfg.select("dataset.segment_duration", 30.0)),
            stereo_interleave=bool(cfg.select("interleave_stereo_codebooks.use", False)),
            stereo_per_timestep=bool(cfg.select("interleave_stereo_codebooks.per_timestep", False)),
            compression_n_q=cfg.select("compression_model_n_q", None),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"unsupported audiocraft LM config: {exc}") from None


def split_conditioner_states(
    state: dict[str, torch.Tensor], config: LMConfig
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """The LM's own weights, and each conditioner's (``output_proj.*``), from a ``best_state``.

    The chroma extractor's fixed STFT window (``self_wav.chroma.*``) is not a learnt weight
    and is dropped; audiocraft's ``nn.MultiheadAttention`` keys (``.mha.``) are renamed.
    """
    lm: dict[str, torch.Tensor] = {}
    conditioners: dict[str, dict[str, torch.Tensor]] = {c.name: {} for c in config.conditioners}
    for key, value in state.items():
        if not key.startswith(CONDITIONER_PREFIX):
            lm[key.replace(".mha.", ".")] = value
            continue
        name, _, rest = key[len(CONDITIONER_PREFIX) :].partition(".")
        if name in conditioners and rest.startswith("output_proj."):
            conditioners[name][rest] = value
        elif not (name in conditioners and rest.startswith("chroma.")):
            raise CheckpointError(f"unexpected conditioner weight {key!r}")
    return lm, conditioners


def read_audiocraft(path: Path) -> LMCheckpoint:
    """Reads an audiocraft export: ``state_dict.bin`` (and its directory's codec file)."""
    import yaml

    pkg = load_torch(path)
    if not isinstance(pkg, dict) or "best_state" not in pkg:
        raise CheckpointError(f"{path}: not an audiocraft LM export (no 'best_state')")
    cfg = pkg.get("xp.cfg")
    if isinstance(cfg, str):
        try:
            cfg = yaml.safe_load(cfg)
        except yaml.YAMLError as exc:
            raise CheckpointError(f"{path}: its config is not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: audiocraft export without its config ('xp.cfg')")
    state = pkg["best_state"]
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint rather than an export
    state = float_state(state, path)
    try:
        config = config_from_audiocraft(cfg, state)
        lm_state, conditioner_states = split_conditioner_states(state, config)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    codec = path.parent / COMPRESSION_FILE
    return LMCheckpoint(
        path=path,
        format="audiocraft",
        config=config,
        lm_state=lm_state,
        conditioner_states=conditioner_states,
        codec_path=codec if codec.is_file() else None,
    )
