"""audiocraft's ``StreamingTransformer``, for inference, with an explicit key/value cache.

The math is audiocraft's with ``memory_efficient=True`` (how MusicGen and AudioGen were
trained): packed ``in_proj_weight`` projections split as ``(q, k, v)``, attention by
``F.scaled_dot_product_attention``, sinusoidal positions added to the input. Parameter names
are audiocraft's state-dict keys (``layers.{i}.self_attn.in_proj_weight``, ``linear1``,
``norm_cross``...), so official weights load with a plain ``load_state_dict``.

Incremental decoding keeps every layer's past keys and values in an :class:`LMCache`; feeding
a sequence in pieces gives the same output as feeding it at once, and positions continue
from the cache's offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .lm_config import LMConfig


def create_sin_embedding(
    positions: torch.Tensor,
    dim: int,
    max_period: float = 10_000,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sinusoidal positional embedding ``[..., T, dim]``: cosines, then sines.

    Computed as audiocraft does (``max_period ** (i / (half - 1))`` in ``dtype``); in float32
    it is bit-identical to the one the models were trained with.

    Args:
        positions: Integer positions ``[..., T, 1]``.
        dim: Embedding width (even).
        max_period: Longest period.
        dtype: Floating type to compute in.
    """
    half = dim // 2
    positions = positions.to(dtype)
    adim = torch.arange(half, device=positions.device, dtype=dtype).view(1, 1, -1)
    max_period_tensor = torch.full([], max_period, device=positions.device, dtype=dtype)
    phase = positions / (max_period_tensor ** (adim / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


@dataclass
class LMCache:
    """Keys and values of the positions already seen, per layer, for incremental decoding.

    One cache serves one sequence batch from its first step on; conditions prepended to the
    input occupy its first positions. Storage is preallocated and grows (doubling) if a step
    goes past it.

    Attributes:
        keys: Per layer, ``[B, H, capacity, head_dim]``; positions ``[:offset]`` are filled.
        values: Per layer, same shape as ``keys``.
        offset: Positions already in the cache; the next input starts at this position.
        cross: Per layer, the cross-attention keys and values ``[B, H, T_c, head_dim]`` of the
            condition, computed at the first step and reused (the condition must not change
            within one cache), or None before the first step.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    offset: int = 0
    cross: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None

    @property
    def batch_size(self) -> int:
        """Sequences in the batch."""
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        """Positions the storage holds before it has to grow."""
        return self.keys[0].shape[2]

    def reserve(self, steps: int) -> None:
        """Makes room for ``steps`` more positions."""
        needed = self.offset + steps
        if needed <= self.capacity:
            return
        size = max(needed, 2 * self.capacity)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_zeros(*old.shape[:2], size, old.shape[3])
                new[:, :, : self.offset] = old[:, :, : self.offset]
                store[i] = new


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (Touvron et al. 2021); key ``scale``."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, T, H * D]`` -> ``[B, H, T, D]``."""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


class MultiheadAttention(nn.Module):
    """audiocraft's custom ``StreamingMultiheadAttention`` (causal self- or cross-attention).

    ``in_proj_weight`` ``[3 * dim, dim]`` stacks the query, key and value projections, as
    ``nn.MultiheadAttention`` does.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool, cross_attention: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.cross_attention = cross_attention
        in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.in_proj_weight = in_proj.weight
        self.register_parameter("in_proj_bias", in_proj.bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        # The in-projection as modules (the stack, or q, k, v apart for cross-attention), set by
        # :meth:`split_in_proj_` so that module-wise quantization reaches it (int8).
        self.in_proj: nn.Module | None = None

    def split_in_proj_(self) -> None:
        """Moves the stacked ``in_proj_weight`` into ``nn.Linear`` modules: one for
        self-attention (queries, keys and values from one input), three for cross-attention
        (keys and values from the condition). The fp32 parameters are dropped."""
        weight, bias = self.in_proj_weight.detach(), self.in_proj_bias
        parts = 1 if not self.cross_attention else 3
        linears = []
        for rows in weight.chunk(parts):
            linear = nn.Linear(rows.shape[1], rows.shape[0], bias=bias is not None)
            linear.weight.data = rows.clone()
            linears.append(linear)
        if bias is not None:
            for linear, part in zip(linears, bias.detach().chunk(parts), strict=True):
                linear.bias.data = part.clone()
        del self.in_proj_weight, self.in_proj_bias
        self.register_parameter("in_proj_bias", None)
        self.in_proj = linears[0] if parts == 1 else nn.ModuleList(linears)

    def _project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """Query (0), key (1) or value (2) projection of ``x``, split into heads."""
        if self.in_proj is not None:
            return _split_heads(self.in_proj[part](x), self.num_heads)
        dim = self.in_proj_weight.shape[1]
        rows = slice(part * dim, (part + 1) * dim)
        bias = None if self.in_proj_bias is None else self.in_proj_bias[rows]
        return _split_heads(F.linear(x, self.in_proj_weight[rows], bias), self.num_heads)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values ``[B, H, T_c, D]`` of ``source`` ``[B, T_c, dim]``."""
        return self._project(source, 1), self._project(source, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, t, -1))

    def attend_cross(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Cross-attention of ``x`` ``[B, S, dim]`` to projected keys and values (no mask)."""
        q = self._project(x, 0)
        return self._merge(F.scaled_dot_product_attention(q, kv[0], kv[1]))

    def forward(
        self, x: torch.Tensor, cache: LMCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        """Causal self-attention of ``x`` ``[B, S, dim]``, after the cached positions if any."""
        b, s, _ = x.shape
        if self.in_proj is not None:
            projected = self.in_proj(x)
        else:
            projected = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = projected.view(b, s, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        past = 0
        if cache is not None:
            past = cache.offset
            cache.keys[layer][:, :, past : past + s] = k
            cache.values[layer][:, :, past : past + s] = v
            k = cache.keys[layer][:, :, : past + s]
            v = cache.values[layer][:, :, : past + s]
        mask = None
        if s > 1 and past > 0:
            # Query i sits at position past + i and sees keys up to there.
            queries = torch.arange(past, past + s, device=x.device).view(-1, 1)
            mask = torch.arange(past + s, device=x.device).view(1, -1) <= queries
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=s > 1 and past == 0)
        return self._merge(out)


class TransformerLayer(nn.Module):
    """audiocraft's ``StreamingTransformerLayer``: self-attention, cross-attention, feed-forward."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        dim = config.dim
        self.norm_first = config.norm_first
        self.self_attn = MultiheadAttention(dim, config.num_heads, config.bias_attn, False)
        self.linear1 = nn.Linear(dim, config.ffn_dim, bias=config.bias_ff)
        self.linear2 = nn.Linear(config.ffn_dim, dim, bias=config.bias_ff)
        self.activation = F.gelu if config.activation == "gelu" else F.relu
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)

        def scale() -> nn.Module:
            if config.layer_scale is None:
                return nn.Identity()
            return LayerScale(dim, config.layer_scale)

        self.layer_scale_1 = scale()
        self.layer_scale_2 = scale()
        self.cross_attention: MultiheadAttention | None = None
        if config.cross_attention:
            self.cross_attention = MultiheadAttention(dim, config.num_heads, config.bias_attn, True)
            self.norm_cross = nn.LayerNorm(dim, eps=1e-5)
            self.layer_scale_cross = scale()

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.activation(self.linear1(x)))

    def _cross(self, x: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        assert self.cross_attention is not None
        return self.layer_scale_cross(self.cross_attention.attend_cross(x, cross_kv))

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor] | None,
        cache: LMCache | None,
        layer: int,
    ) -> torch.Tensor:
        """One layer on ``x`` ``[B, S, dim]``; ``cross_kv``: this layer's condition keys/values."""
        src = x
        if self.norm_first:
            x = x + self.layer_scale_1(self.self_attn(self.norm1(x), cache, layer))
            if cross_kv is not None:
                x = x + self._cross(self.norm_cross(x), cross_kv)
            return x + self.layer_scale_2(self._feed_forward(self.norm2(x)))
        x = self.norm1(x + self.layer_scale_1(self.self_attn(x, cache, layer)))
        if cross_kv is not None:
            # audiocraft's post-norm layer cross-attends from the layer's input, not from x.
            x = self.norm_cross(x + self._cross(src, cross_kv))
        return self.norm2(x + self.layer_scale_2(self._feed_forward(x)))


class StreamingTransformer(nn.Module):
    """The layer stack, with sinusoidal positions added to its input."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))

    def new_cache(
        self, batch: int, max_steps: int, device: torch.device, dtype: torch.dtype
    ) -> LMCache:
        """An empty cache for ``batch`` sequences, preallocated for ``max_steps`` positions."""
        shape = (batch, self.config.num_heads, max(1, max_steps), self.config.head_dim)
        n = self.config.num_layers
        return LMCache(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)],
            cross=[None] * n,
        )

    def _cross_kv(
        self, layer: int, source: torch.Tensor | None, cache: LMCache | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        attention = self.layers[layer].cross_attention
        if attention is None:
            return None
        if cache is not None and cache.cross is not None and cache.cross[layer] is not None:
            return cache.cross[layer]
        if source is None:
            raise ValueError("this LM cross-attends to a condition: pass one")
        kv = attention.project_kv(source)
        if cache is not None:
            if cache.cross is None:
                cache.cross = [None] * len(self.layers)
            cache.cross[layer] = kv
        return kv

    def forward(
        self,
        x: torch.Tensor,
        cross_attention_src: torch.Tensor | None = None,
        cache: LMCache | None = None,
    ) -> torch.Tensor:
        """Runs the stack.

        Args:
            x: Input embeddings ``[B, S, dim]``.
            cross_attention_src: Condition ``[B, T_c, dim]`` for cross-attention, or None.
            cache: Past keys/values; ``x`` then continues the cached sequence and the cache
                is advanced by ``S``.

        Returns:
            ``[B, S, dim]``.
        """
        _, s, c = x.shape
        offset = 0 if cache is None else cache.offset
        positions = torch.arange(offset, offset + s, device=x.device).view(1, -1, 1)
        # In float32 whatever the LM's precision, as under audiocraft's autocast: bfloat16
        # can't even represent positions above 256 exactly.
        pos_emb = create_sin_embedding(positions, c, self.config.max_period).to(x.dtype)
        x = x + self.config.positional_scale * pos_emb
        if cache is not None:
            cache.reserve(s)
        for i, layer in enumerate(self.layers):
            x = layer(x, self._cross_kv(i, cross_attention_src, cache), cache, i)
        if cache is not None:
            cache.offset += s
        return x
