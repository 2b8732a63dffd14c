"""Tiny MusicGen models with random weights, written in both official checkpoint formats.

The reference is transformers' ``MusicgenForConditionalGeneration`` (an implementation
independent of ours). One random model is saved

* as transformers saves it (``save_pretrained``: ``config.json`` + ``model.safetensors``,
  with a tiny word-level T5 tokenizer beside it), and
* as audiocraft exports it: ``state_dict.bin`` (``xp.cfg`` YAML + ``best_state`` under
  audiocraft's key names, renamed here by an explicit table) and
  ``compression_state_dict.bin`` (the codec), with the T5 encoder in a directory of its own,
  since audiocraft fetches T5 by name.

Weights are redrawn at unit scale (transformers' initialisation, std 0.02, would make every
logit nearly 0 and hide mistakes).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

WORDS = [
    *"abcdefgh",
    "lo",
    "fi",
    "beat",
    "drums",
    "guitar",
    "piano",
    "calm",
    "rock",
    "song",
    "with",
]
CARD = 64
N_Q = 4
DIM = 64


def tiny_tokenizer(size: int = 0) -> Any:
    """A word-level T5-like tokenizer: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, appended ``</s>``.

    ``size``: pad the vocabulary with unused tokens to this many (a T5-base-shaped encoder's
    loader refuses a tokenizer of under half its embedding rows)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    vocab |= {f"<unused_{i}>": i for i in range(len(vocab), size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Redraws every weight at unit scale: matrices ``N(0, 1 / fan_in)``, norms near 1."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if p.ndim >= 2 and "embed" not in name and "shared" not in name:
            p.copy_(noise / math.sqrt(p.shape[1]))
        elif p.ndim >= 2:
            p.copy_(noise)
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * noise)
        else:
            p.copy_(0.2 * noise)


CHROMA_LENGTH = 10


def tiny_musicgen(seed: int = 0, channels: int = 1, melody: bool = False) -> Any:
    """transformers' MusicGen with a 2-layer T5 (width 32), a 2-layer decoder (width 64,
    4 heads) over 4 codebooks of 64 (8 interleaved for stereo), and a tiny 32 kHz EnCodec.

    With ``melody``, MusicGen-melody: no cross-attention; a 12-bin chromagram (repeated to
    ``CHROMA_LENGTH`` frames) and the text are prepended to the codes.
    """
    from reference_models import codebooks_from_latents_, perturb_
    from transformers import EncodecConfig, T5Config

    if melody:
        from transformers import MusicgenMelodyConfig as Config
        from transformers import MusicgenMelodyDecoderConfig as DecoderConfig
        from transformers import MusicgenMelodyForConditionalGeneration as Model
    else:
        from transformers import MusicgenConfig as Config
        from transformers import MusicgenDecoderConfig as DecoderConfig
        from transformers import MusicgenForConditionalGeneration as Model

    t5 = T5Config(vocab_size=len(WORDS) + 3, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    codec = EncodecConfig(
        sampling_rate=32_000, audio_channels=1, hidden_size=16, num_filters=4,
        upsampling_ratios=[8, 5, 4, 4], codebook_size=CARD, target_bandwidths=[1.2],
        use_causal_conv=False, pad_mode="constant", use_conv_shortcut=False, num_lstm_layers=1,
    )  # fmt: skip
    decoder = DecoderConfig(
        vocab_size=CARD, hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4,
        ffn_dim=2 * DIM, num_codebooks=N_Q * channels, audio_channels=channels,
        pad_token_id=CARD, bos_token_id=CARD,
    )  # fmt: skip
    torch.manual_seed(seed)
    extra = {"num_chroma": 12, "chroma_length": CHROMA_LENGTH} if melody else {}
    model = Model(Config(text_encoder=t5, audio_encoder=codec, decoder=decoder, **extra))
    randomize_(model.text_encoder, seed)
    randomize_(model.decoder, seed + 1)
    randomize_(model.enc_to_dec_proj, seed + 2)
    if melody:
        randomize_(model.audio_enc_to_dec_proj, seed + 3)
    perturb_(model.audio_encoder, seed)
    with torch.no_grad():
        wav = torch.randn(1, 1, 32_000, generator=torch.Generator().manual_seed(seed))
        embeds = [layer.codebook.embed for layer in model.audio_encoder.quantizer.layers]
        codebooks_from_latents_(embeds, model.audio_encoder.encoder(wav), seed)
    return model.eval()


@contextlib.contextmanager
def audiocraft_cross_attention(model: Any) -> Iterator[Any]:
    """transformers' MusicGen with audiocraft's text conditioning, for as long as it is open.

    transformers already zeroes the projected T5 states at padded positions
    (``enc_to_dec_proj(...) * attention_mask[..., None]``, as audiocraft's ``T5Conditioner``
    multiplies ``output_proj``'s output by the mask), but it then also passes the mask to the
    decoder's cross-attention. audiocraft does not: its ``ConditionFuser`` drops the mask and
    ``StreamingTransformerLayer`` cross-attends to every position, so zeroed padding takes
    part in the softmax. Dropping ``encoder_attention_mask`` on its way into the decoder gives
    audiocraft's semantics (also for the null condition of guidance, which is all zeros).
    """
    forward = model.decoder.forward

    def without_mask(*args: Any, **kwargs: Any) -> Any:
        kwargs["encoder_attention_mask"] = None
        return forward(*args, **kwargs)

    model.decoder.forward = without_mask
    try:
        yield model
    finally:
        del model.decoder.forward


def save_hf(model: Any, directory: Path) -> Path:
    """The model as transformers saves it, with the T5 tokenizer beside it."""
    model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


# transformers -> audiocraft names inside one decoder layer (q, k, v are stacked separately).
_LAYER_NAMES = {
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "encoder_attn.out_proj.weight": "cross_attention.out_proj.weight",
    "self_attn_layer_norm": "norm1",
    "encoder_attn_layer_norm": "norm_cross",
    "final_layer_norm": "norm2",
    "fc1.weight": "linear1.weight",
    "fc2.weight": "linear2.weight",
}


def audiocraft_best_state(model: Any) -> dict[str, torch.Tensor]:
    """The LM's weights under the keys of audiocraft's ``LMModel.state_dict()``."""
    sd = model.state_dict()
    dec = "decoder.model.decoder."
    n_q = model.decoder.config.num_codebooks
    out = {}
    for k in range(n_q):
        out[f"emb.{k}.weight"] = sd[f"{dec}embed_tokens.{k}.weight"]
        out[f"linears.{k}.weight"] = sd[f"decoder.lm_heads.{k}.weight"]
    for i in range(model.decoder.config.num_hidden_layers):
        hf, ours = f"{dec}layers.{i}.", f"transformer.layers.{i}."
        for attn, name in (("self_attn", "self_attn"), ("encoder_attn", "cross_attention")):
            qkv = [sd[f"{hf}{attn}.{p}_proj.weight"] for p in "qkv"]
            out[f"{ours}{name}.in_proj_weight"] = torch.cat(qkv)
        for hf_name, our_name in _LAYER_NAMES.items():
            if hf_name.endswith(".weight"):
                out[ours + our_name] = sd[hf + hf_name]
            else:
                for param in ("weight", "bias"):
                    out[f"{ours}{our_name}.{param}"] = sd[f"{hf}{hf_name}.{param}"]
    out["out_norm.weight"] = sd[f"{dec}layer_norm.weight"]
    out["out_norm.bias"] = sd[f"{dec}layer_norm.bias"]
    proj = "condition_provider.conditioners.description.output_proj."
    out[proj + "weight"] = sd["enc_to_dec_proj.weight"]
    out[proj + "bias"] = sd["enc_to_dec_proj.bias"]
    # Official exports are stored in float16; ours stay float32 to compare at 1e-5.
    return {k: v.clone() for k, v in out.items()}


def musicgen_yaml(channels: int = 1) -> str:
    """An ``xp.cfg`` as audiocraft's ``export_lm`` writes it (``OmegaConf.to_yaml``), for the
    tiny model: unresolved interpolations included."""
    n_q = N_Q * channels
    delays = [k // 2 for k in range(n_q)] if channels == 2 else list(range(n_q))
    return f"""\
device: cuda
dtype: float16
sample_rate: 32000
channels: {channels}
lm_model: transformer_lm
compression_model_checkpoint: //pretrained/facebook/encodec_32khz
dora:
  dir: ${{oc.env:AUDIOCRAFT_DORA_DIR}}
codebooks_pattern:
  modeling: delay
  delay:
    delays: {delays}
    flatten_first: 0
    empty_initial: 0
  unroll:
    flattening: [0, 1, 2, 3]
    delays: [0, 0, 0, 0]
transformer_lm:
  dim: {DIM}
  num_heads: 4
  num_layers: 2
  hidden_scale: 2
  n_q: {n_q}
  card: {CARD}
  dropout: 0.0
  emb_lr: null
  activation: gelu
  norm_first: true
  bias_ff: false
  bias_attn: false
  bias_proj: false
  past_context: null
  causal: true
  custom: false
  memory_efficient: true
  attention_as_float32: false
  layer_scale: null
  positional_embedding: sin
  xpos: false
  checkpointing: none
  weight_init: gaussian
  depthwise_init: current
  zero_bias_init: true
  norm: layer_norm
  cross_attention: false
  qk_layer_norm: false
  qk_layer_norm_cross: false
  attention_dropout: null
  kv_repeat: 1
  two_step_cfg: false
classifier_free_guidance:
  training_dropout: 0.3
  inference_coef: 3.0
attribute_dropout: {{}}
fuser:
  cross_attention_pos_emb: false
  cross_attention_pos_emb_scale: 1
  sum: []
  prepend: []
  cross:
  - description
  input_interpolate: []
conditioners:
  description:
    model: t5
    t5:
      name: t5-base
      finetune: false
      word_dropout: 0.3
      normalize_text: false
dataset:
  segment_duration: ${{generate.duration}}
  batch_size: 192
generate:
  duration: 30
interleave_stereo_codebooks:
  use: {str(channels == 2).lower()}
  per_timestep: false
"""


def compression_yaml() -> str:
    """The audiocraft ``xp.cfg`` of the tiny codec (``tiny_musicgen``'s audio encoder)."""
    return """\
sample_rate: 32000
channels: 1
compression_model: encodec
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${sample_rate}
  channels: ${channels}
  causal: false
  renormalize: false
seanet:
  dimension: 16
  channels: ${channels}
  causal: ${encodec.causal}
  n_filters: 4
  n_residual_layers: 1
  ratios: [8, 5, 4, 4]
  activation: ELU
  activation_params:
    alpha: 1.0
  norm: weight_norm
  norm_params: {}
  kernel_size: 7
  residual_kernel_size: 3
  last_kernel_size: 7
  dilation_base: 2
  pad_mode: constant
  true_skip: true
  compress: 2
  lstm: 1
  disable_norm_outer_blocks: 0
  decoder:
    trim_right_ratio: 1.0
    final_activation: null
    final_activation_params: null
  encoder: {}
rvq:
  n_q: 4
  q_dropout: false
  bins: 64
"""


def save_audiocraft(model: Any, directory: Path, channels: int = 1) -> tuple[Path, Path]:
    """The model as an audiocraft export, and its T5 encoder in a directory of its own.

    Returns:
        The export's directory and the T5 directory (to pass as ``text_encoder``).
    """
    from audiotok import load_codec

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "xp.cfg": musicgen_yaml(channels),
            "best_state": audiocraft_best_state(model),
            "version": "1.3.0",
            "exported": True,
        },
        directory / "state_dict.bin",
    )
    # The codec's weights under audiocraft's names: ours, read from transformers' files.
    model.audio_encoder.save_pretrained(directory / "hf_codec")
    codec = load_codec(directory / "hf_codec")
    torch.save(
        {
            "xp.cfg": compression_yaml(),
            "best_state": codec.model.state_dict(),
            "version": "1.3.0",
            "exported": True,
        },
        directory / "compression_state_dict.bin",
    )
    t5_dir = directory.parent / f"{directory.name}_t5"
    model.text_encoder.save_pretrained(t5_dir)
    tiny_tokenizer().save_pretrained(t5_dir)
    return directory, t5_dir
