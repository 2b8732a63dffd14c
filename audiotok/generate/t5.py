"""The T5 text encoder of MusicGen and AudioGen, without transformers.

audiocraft's ``T5Conditioner`` runs transformers' ``T5EncoderModel`` (``t5-base`` for
MusicGen, ``t5-large`` for AudioGen) frozen, in float32, and takes its last hidden state.
This is that encoder, module for module, so that checkpoints load under transformers' own
keys and the arithmetic is the same (tests/test_generate_t5.py checks both against
transformers)::

    shared.weight                                           token embedding [vocab, d_model]
    encoder.embed_tokens.weight                             the same matrix (tied)
    encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight
    encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight   [buckets, heads]
    encoder.block.{i}.layer.0.layer_norm.weight
    encoder.block.{i}.layer.1.DenseReluDense.{wi,wo}.weight          (feed_forward_proj relu)
    encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight   (gated-gelu: T5 v1.1)
    encoder.block.{i}.layer.1.layer_norm.weight
    encoder.final_layer_norm.weight

Why not transformers itself: importing its T5 pulls in ``torch._dynamo`` and most of the
library, in every generator process (each ``audiotok serve``, each Ray replica, each
``audiotok generate``): a tiny MusicGen's process ran 2.6 s longer with it
(docs/GENERATION.md). T5's encoder is small: pre-norm blocks of unscaled self-attention with
a learnt bias per bucket of relative position (shared by all blocks), a ReLU or gated-GELU
feed-forward, RMS norms without bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError


class NewGELU(nn.Module):
    """GELU's tanh approximation written out as transformers' ``gelu_new`` computes it (torch's
    ``approximate="tanh"`` differs from it in the last bits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3.0))))


# Activations of transformers' ``ACT2FN`` that T5 configs name ("gated-gelu" means gelu_new).
ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_new": NewGELU,
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


# Prefixes of a whole T5's weights that its encoder does not use.
DECODER_KEYS = ("decoder.", "lm_head.")


@dataclass(frozen=True)
class T5Config:
    """The encoder's part of a transformers ``T5Config``, with transformers' defaults.

    Attributes:
        raw: The dict it was read from, kept whole, so that a checkpoint we write carries the
            same ``config.json`` fields it was given.
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    # Derived from feed_forward_proj unless the config names them (transformers then takes
    # the config's: its saved configs always do, consistently).
    dense_act_fn: str | None = None
    is_gated_act: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> T5Config:
        """The config of a ``config.json`` dict; missing fields take transformers' defaults.

        Raises:
            CheckpointError: A field of the wrong type, or a feed-forward we don't know.
        """
        names = {f.name for f in fields(cls)} - {"raw"}
        values = {k: v for k, v in config.items() if k in names and v is not None}
        try:
            out = cls(**values, raw=dict(config))
            _ = out.activation  # refuse an unknown feed-forward at load, not at first use
            not_sizes = {"layer_norm_epsilon", "feed_forward_proj", "dense_act_fn", "is_gated_act"}
            if not all(isinstance(getattr(out, n), int) and getattr(out, n) > 0
                       for n in names - not_sizes):  # fmt: skip
                raise ValueError("sizes must be positive integers")
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"not a T5 encoder config: {exc}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict: the one read, else this config's fields."""
        if self.raw:
            return dict(self.raw)
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "raw"}

    @property
    def is_gated(self) -> bool:
        """A gated feed-forward (``gated-gelu``, T5 v1.1 and flan-T5) rather than ``relu``."""
        if self.is_gated_act is not None:
            return bool(self.is_gated_act)
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def activation(self) -> str:
        """The feed-forward's activation, as transformers resolves ``feed_forward_proj``
        (``dense_act_fn``, when the config names it)."""
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r} is not [gated-]ACT")
        name = "gelu_new" if self.feed_forward_proj == "gated-gelu" else parts[-1]
        name = self.dense_act_fn or name
        if name not in ACTIVATIONS:
            raise ValueError(f"feed-forward activation {name!r} is not one T5 uses")
        return name


class T5LayerNorm(nn.Module):
    """RMS norm without bias or mean, its statistic in float32 (transformers' ``T5LayerNorm``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bidirectional bucket of each ``key - query`` distance.

    The upper half of the buckets is for keys after the query. Of each half, the first half
    are exact distances (0 .. n/4-1), the rest log-spaced up to ``max_distance``; anything
    further shares the last bucket. With 32 buckets and 128, for ``key - query``: -3 -> 3,
    3 -> 19 (16 + 3), -10 -> 8 + int(log(10/8) / log(128/8) * 8) = 8, -200 -> 15, 200 -> 31.
    """
    half = num_buckets // 2
    buckets = (relative_position > 0).to(torch.long) * half
    distance = relative_position.abs()
    exact = half // 2
    # log(0) where distance is 0 is -inf; torch.where picks the exact branch there.
    large = exact + (
        torch.log(distance.float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).to(torch.long)
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(distance < exact, distance, large)


class T5Attention(nn.Module):
    """Self-attention without the ``1/sqrt(d)`` scale (T5 folds it into the weights)."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool) -> None:
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.heads = config.num_heads
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(self.num_buckets, config.num_heads)

    def position_bias(self, length: int) -> torch.Tensor:
        """The learnt bias ``[1, heads, T, T]`` of each query-key distance (block 0 only)."""
        device = self.relative_attention_bias.weight.device
        positions = torch.arange(length, dtype=torch.long, device=device)
        distance = positions[None, :] - positions[:, None]  # key - query, [T, T]
        buckets = relative_position_bucket(distance, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, d_model]``; ``bias`` ``[B|1, heads, T, T]``: position plus mask."""
        batch, length, _ = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:  # [B, heads, T, d_kv]
            return proj(x).view(batch, length, self.heads, -1).transpose(1, 2)

        scores = torch.matmul(heads(self.q), heads(self.k).transpose(2, 3)) + bias
        weights = nn.functional.softmax(scores, dim=-1)
        out = torch.matmul(weights, heads(self.v)).transpose(1, 2).reshape(batch, length, -1)
        return self.o(out)


class T5LayerSelfAttention(nn.Module):
    """Pre-norm self-attention with its residual."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseActDense(nn.Module):
    """``wo(act(wi(x)))``: the feed-forward of the original T5 (``relu``)."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = ACTIVATIONS[config.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.act(self.wi(x)).to(self.wo.weight.dtype))


class T5DenseGatedActDense(nn.Module):
    """``wo(act(wi_0(x)) * wi_1(x))``: T5 v1.1's gated feed-forward."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = ACTIVATIONS[config.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.wi_0(x)) * self.wi_1(x)
        return self.wo(hidden.to(self.wo.weight.dtype))


class T5LayerFF(nn.Module):
    """Pre-norm feed-forward with its residual."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        dense = T5DenseGatedActDense if config.is_gated else T5DenseActDense
        self.DenseReluDense = dense(config)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    """One encoder block: ``layer[0]`` self-attention, ``layer[1]`` feed-forward."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            [T5LayerSelfAttention(config, has_relative_attention_bias), T5LayerFF(config)]
        )

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return _clamp_half(self.layer[1](_clamp_half(self.layer[0](x, bias))))


def _clamp_half(x: torch.Tensor) -> torch.Tensor:
    """In float16 only, as transformers' ``T5Block``: the residual stream kept finite (an inf
    becomes the largest value less 1000). We run float32, as audiocraft's conditioner does."""
    if x.dtype != torch.float16:
        return x
    top = torch.finfo(x.dtype).max
    limit = torch.where(torch.isinf(x).any(), top - 1000, top)
    return torch.clamp(x, min=-limit, max=limit)


class T5Stack(nn.Module):
    """The encoder's blocks between the embedding and the final norm."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.block = nn.ModuleList([T5Block(config, i == 0) for i in range(config.num_layers)])
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        # One bias for every block: block 0's learnt position bias, plus the smallest float
        # at masked keys, as transformers' eager attention adds them.
        position = self.block[0].layer[0].SelfAttention.position_bias(input_ids.shape[1])
        masked = (attention_mask[:, None, None, :] == 0).to(x.dtype)
        bias = position.to(x.dtype) + masked * torch.finfo(x.dtype).min
        for block in self.block:
            x = block(x, bias)
        return self.final_layer_norm(x)


class T5EncoderModel(nn.Module):
    """transformers' ``T5EncoderModel`` at inference: ids to last hidden states.

    Attributes:
        config: Its :class:`T5Config`.
        shared: The token embedding; ``encoder.embed_tokens`` is the same module.
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[B, T, d_model]`` of ``input_ids`` ``[B, T]``; keys where
        ``attention_mask`` ``[B, T]`` is 0 are not attended to."""
        return self.encoder(input_ids, attention_mask)


def t5_encoder_from_state(
    config: T5Config, state: dict[str, torch.Tensor], where: str
) -> T5EncoderModel:
    """The encoder of ``config`` holding ``state`` (transformers' keys), in float32, eval mode.

    The embedding may be stored once, as ``shared.weight`` or as ``encoder.embed_tokens``;
    a whole T5's decoder and LM head (``decoder.*``, ``lm_head.*``) are ignored.

    Raises:
        CheckpointError: Weights missing, unknown or of the wrong shape, in one line.
    """
    state = {k: v for k, v in state.items() if not k.startswith(DECODER_KEYS)}
    embedding = state.pop("encoder.embed_tokens.weight", None)
    state.setdefault("shared.weight", embedding)
    if state["shared.weight"] is None:
        del state["shared.weight"]
    with torch.device("meta"):
        model = T5EncoderModel(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    expected.pop("encoder.embed_tokens.weight")  # the tie
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} T5 encoder weights missing ({', '.join(missing[:2])}...): "
            "not a T5 encoder's checkpoint, or a damaged one"
        )
    if unknown:
        raise CheckpointError(f"{where}: unexpected T5 weights ({', '.join(unknown[:2])}...)")
    if wrong:
        key = wrong[0]
        raise CheckpointError(
            f"{where}: T5 weight {key} is {tuple(state[key].shape)}, its config makes it "
            f"{tuple(expected[key])}"
        )
    # strict=False for the tie only: encoder.embed_tokens is the module shared.weight fills.
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False, assign=True)
    return model.eval()
