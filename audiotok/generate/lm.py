"""The MusicGen / AudioGen language model over parallel codebook streams (audiocraft's ``LMModel``).

At each sequence step the LM reads one token per codebook, ``K`` of them, sums their
embeddings (``emb.{k}``, ``card + 1`` rows each: the last is the special token that marks a
position not yet generated or delayed by the codebook pattern), runs the transformer (with
cross-attention to the text condition, or with conditions prepended to the input) and
predicts the next token of every codebook with one head each (``linears.{k}``).

Example, with the delay pattern of 4 codebooks (``s`` = special token = ``card``)::

    codes [B, K=4, S]         logits [B, 4, S, card]: step t predicts step t + 1
      k=0: s a1 a2 a3 a4        the LM sees every codebook up to step t and outputs
      k=1: s s  b1 b2 b3        the distribution of each codebook at step t + 1
      k=2: s s  s  c1 c2
      k=3: s s  s  s  d1

Parameter names are audiocraft's state-dict keys, so an official ``best_state`` (less its
``condition_provider.*`` keys, which belong to the conditioners) loads with a plain
``load_state_dict``.
"""

from __future__ import annotations

import torch
from torch import nn

from .conditioners import ConditionTensors
from .lm_config import LMConfig
from .transformer import LMCache, StreamingTransformer, create_sin_embedding


class LMModel(nn.Module):
    """Transformer LM on ``K`` parallel streams of codec tokens.

    Attributes:
        config: The architecture.
        emb: Per codebook, an embedding of ``card + 1`` tokens.
        transformer: The layer stack.
        out_norm: Final LayerNorm (pre-norm models), or None.
        linears: Per codebook, the output head ``dim -> card``.
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.card = config.card
        self.n_q = config.n_q
        self.emb = nn.ModuleList(
            nn.Embedding(config.card + 1, config.dim) for _ in range(config.n_q)
        )
        self.transformer = StreamingTransformer(config)
        self.out_norm: nn.Module | None = (
            nn.LayerNorm(config.dim, eps=1e-5) if config.norm_first else None
        )
        self.linears = nn.ModuleList(
            nn.Linear(config.dim, config.card, bias=config.bias_proj) for _ in range(config.n_q)
        )

    @property
    def special_token_id(self) -> int:
        """The token of positions not generated yet or delayed by the pattern: ``card``."""
        return self.card

    @property
    def num_codebooks(self) -> int:
        """Parallel codebook streams ``K``."""
        return self.n_q

    @property
    def device(self) -> torch.device:
        """Where the parameters are."""
        return self.emb[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' floating type."""
        return self.emb[0].weight.dtype

    def new_cache(self, batch: int, max_steps: int) -> LMCache:
        """An empty key/value cache for incremental decoding of ``batch`` sequences.

        Args:
            batch: Sequences (twice the samples with classifier-free guidance in one pass).
            max_steps: Positions to preallocate: sequence steps plus any prepended condition
                length; the cache grows if a step goes past it.
        """
        return self.transformer.new_cache(batch, max_steps, self.device, self.dtype)

    def prefix_length(self, condition: ConditionTensors | None) -> int:
        """Positions the prepended conditions take at the start of the sequence."""
        if condition is None:
            return 0
        return sum(condition[n][0].shape[1] for n in self.config.fuse_prepend if n in condition)

    def _fuse(
        self,
        x: torch.Tensor,
        condition: ConditionTensors | None,
        first_step: bool,
        cross_cached: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """audiocraft's ``ConditionFuser``: the input with prepended conditions, and the
        cross-attention source ``[B, T_c, dim]`` (or None)."""
        cfg = self.config
        needed = [n for n in cfg.condition_order if n in cfg.fuse_cross + cfg.fuse_prepend]
        if needed and condition is None:
            raise ValueError(
                f"this LM is conditioned on {', '.join(needed)}: pass a condition "
                "(its null() for unconditional generation)"
            )
        cross = []
        for name in needed:
            assert condition is not None
            if name not in condition:
                raise ValueError(f"the condition lacks {name!r} (it has {condition.names()})")
            embeds = condition[name][0].to(x.dtype)
            if embeds.shape[0] != x.shape[0]:
                raise ValueError(
                    f"condition {name!r} has batch {embeds.shape[0]}, the codes {x.shape[0]}"
                )
            if name in cfg.fuse_prepend:
                if first_step:
                    x = torch.cat([embeds, x], dim=1)
            else:
                cross.append(embeds)
        if not cross or cross_cached:  # the cache holds the source's keys and values
            return x, None
        source = torch.cat(cross, dim=1)
        if cfg.cross_attention_pos_emb:
            positions = torch.arange(source.shape[1], device=source.device).view(1, -1, 1)
            pos_emb = create_sin_embedding(positions, source.shape[-1]).to(source.dtype)
            source = source + cfg.cross_attention_pos_emb_scale * pos_emb
        return x, source

    def forward(
        self,
        codes: torch.Tensor,
        condition: ConditionTensors | None = None,
        cache: LMCache | None = None,
    ) -> torch.Tensor:
        """Logits of the next token of every codebook, at every step.

        Args:
            codes: Tokens ``[B, K, S]`` (int64) in ``[0, card]``, ``card`` being the special
                token: a sequence laid out by the codebook pattern.
            condition: The conditions (batch ``B``), as the conditioner returns them.
            cache: Incremental decoding: ``codes`` continue the cached steps, and the cache
                is advanced. Prepended conditions enter at the cache's first step only.

        Returns:
            Logits ``[B, K, S, card]``; ``[:, k, t]`` predicts codebook ``k`` at step ``t + 1``.
        """
        _, k, s = codes.shape
        if k != self.n_q:
            raise ValueError(f"codes have {k} codebooks, the LM models {self.n_q}")
        x = sum(self.emb[i](codes[:, i]) for i in range(k))
        first_step = cache is None or cache.offset == 0
        cross_cached = (
            cache is not None
            and cache.cross is not None
            and all(kv is not None for kv in cache.cross)
        )
        x, cross = self._fuse(x, condition, first_step, cross_cached)
        out = self.transformer(x, cross_attention_src=cross, cache=cache)
        if self.out_norm is not None:
            out = self.out_norm(out)
        logits = torch.stack([self.linears[i](out) for i in range(k)], dim=1)
        # Positions of prepended conditions predict nothing.
        return logits[:, :, -s:] if s else logits[:, :, :0]
