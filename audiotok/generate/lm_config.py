"""The architecture of a MusicGen / AudioGen language model, as one JSON-serialisable dataclass.

Field names follow audiocraft's ``transformer_lm`` arguments (``n_q``, ``card``, ``dim``,
``hidden_scale``, ``norm_first``, ``bias_proj``...) and the other parts of its Hydra config
that inference needs (the conditioners, the fuser, the codebook pattern, classifier-free
guidance, the audio format), so that a config reads like the official one.

The published models (``dim`` / ``num_heads`` / ``num_layers``; all have ``n_q`` codebooks of
``card`` = 2048 entries, ``hidden_scale`` 4, pre-norm, no biases, GELU, sinusoidal positions):

======================  ==================  ================  =======================
model                   transformer         text encoder      conditioning
======================  ==================  ================  =======================
musicgen-small          1024 / 16 / 24      t5-base           cross-attention
musicgen-medium         1536 / 24 / 48      t5-base           cross-attention
musicgen-large          2048 / 32 / 48      t5-base           cross-attention
musicgen-melody         1536 / 24 / 48      t5-base           prepended text + chroma
musicgen-stereo-*       as above, n_q = 8   t5-base           as above
audiogen-medium         1536 / 24 / 48      t5-large          cross-attention, 16 kHz
======================  ==================  ================  =======================

Example:
    >>> cfg = LMConfig(dim=64, num_heads=4, num_layers=2, card=32)
    >>> cfg.ffn_dim, cfg.head_dim, cfg.condition_order
    (256, 16, ('description',))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..codec.config import unknown_fields

ACTIVATIONS = ("gelu", "relu")
CONDITIONER_MODELS = ("t5", "chroma_stem")
PATTERNS = ("delay", "parallel")


@dataclass(frozen=True)
class ConditionerConfig:
    """One conditioner of audiocraft's ``ConditioningProvider``.

    Attributes:
        name: The attribute it conditions on: ``description`` (text) or ``self_wav`` (melody).
        model: ``t5`` (a T5 text encoder) or ``chroma_stem`` (a chromagram of the melody).
        dim: Width of what it projects to the LM's width: the T5 hidden size, or ``n_chroma``.
        t5_name: The T5 model (``t5-base``, ``t5-large``), for ``t5`` conditioners.
        sample_rate: Sample rate of the chroma extractor, for ``chroma_stem``.
        n_chroma: Chroma bins, for ``chroma_stem``.
        radix2_exp: log2 of the chroma extractor's STFT size, for ``chroma_stem``.
        argmax: Keep only the strongest chroma bin per frame, for ``chroma_stem``.
        chroma_length: Chroma frames a melody is cut or tiled to, for ``chroma_stem``; None:
            those of a training segment, as audiocraft computes them (transformers' configs
            give theirs, ``chroma_length``: 235 for the published models).
    """

    name: str
    model: str
    dim: int
    t5_name: str | None = None
    sample_rate: int | None = None
    n_chroma: int = 12
    radix2_exp: int = 14
    argmax: bool = True
    chroma_length: int | None = None

    def __post_init__(self) -> None:
        if self.model not in CONDITIONER_MODELS:
            raise ValueError(f"conditioner model must be one of {CONDITIONER_MODELS}")

    @property
    def is_text(self) -> bool:
        """True for text conditioners (fed descriptions), False for waveform ones."""
        return self.model == "t5"


DEFAULT_CONDITIONERS = (ConditionerConfig("description", "t5", 768, t5_name="t5-base"),)


@dataclass(frozen=True)
class LMConfig:
    """Architecture and inference settings of a MusicGen / AudioGen LM.

    Attributes:
        n_q: Parallel codebook streams ``K`` the LM models (8 for stereo: L/R interleaved).
        card: Entries per codebook; the embeddings have ``card + 1`` rows, the last being the
            special token (not yet generated / delayed position).
        dim: Transformer width.
        num_heads: Attention heads.
        num_layers: Transformer layers.
        hidden_scale: Feed-forward width as a multiple of ``dim``.
        norm: Normalisation (``layer_norm`` only).
        norm_first: Pre-norm layers, and a final ``out_norm``.
        activation: Feed-forward activation (``gelu`` or ``relu``).
        bias_proj: Biases in the output heads ``linears.{k}``.
        bias_ff: Biases in the feed-forward layers.
        bias_attn: Biases in the attention projections.
        cross_attention: Layers cross-attend to the conditions fused by ``cross``.
        layer_scale: Initial LayerScale, or None for no LayerScale.
        positional_embedding: ``sin`` (added to the input; the only one MusicGen uses).
        max_period: Longest period of the sinusoidal embedding.
        positional_scale: Factor on the positional embedding.
        conditioners: The conditioners, in audiocraft's config order.
        fuse_cross: Conditions given to cross-attention, concatenated along time.
        fuse_prepend: Conditions prepended to the LM input.
        cross_attention_pos_emb: Add sinusoidal positions to the cross-attention source.
        cross_attention_pos_emb_scale: Factor on those positions.
        cfg_coef: Default classifier-free guidance coefficient.
        two_step_cfg: Run conditional and null conditions as two passes by default.
        pattern: Codebook interleaving: ``delay`` or ``parallel``.
        delays: Delay of each codebook, in steps (``[0, 1, 2, 3]``; ``[0, 0, 1, 1, ...]`` stereo).
        flatten_first: audiocraft's delay-pattern option (leading steps flattened).
        empty_initial: audiocraft's delay-pattern option (empty steps at the start).
        sample_rate: Sample rate of the audio (the codec's).
        channels: Audio channels generated (2 for the stereo models).
        segment_duration: Training segment in seconds: the longest one-pass generation.
        stereo_interleave: The codec runs on each channel and their codebooks interleave
            (audiocraft's ``interleave_stereo_codebooks``).
        stereo_per_timestep: Interleave channels along time instead of codebooks.
        compression_n_q: Codebooks of the codec to use, or None for all.
    """

    n_q: int = 4
    card: int = 2048
    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    hidden_scale: float = 4.0
    norm: str = "layer_norm"
    norm_first: bool = True
    activation: str = "gelu"
    bias_proj: bool = False
    bias_ff: bool = False
    bias_attn: bool = False
    cross_attention: bool = True
    layer_scale: float | None = None
    positional_embedding: str = "sin"
    max_period: float = 10_000.0
    positional_scale: float = 1.0
    conditioners: tuple[ConditionerConfig, ...] = field(default=DEFAULT_CONDITIONERS)
    fuse_cross: tuple[str, ...] = ("description",)
    fuse_prepend: tuple[str, ...] = ()
    cross_attention_pos_emb: bool = False
    cross_attention_pos_emb_scale: float = 1.0
    cfg_coef: float = 3.0
    two_step_cfg: bool = False
    pattern: str = "delay"
    delays: tuple[int, ...] = (0, 1, 2, 3)
    flatten_first: int = 0
    empty_initial: int = 0
    sample_rate: int = 32_000
    channels: int = 1
    segment_duration: float = 30.0
    stereo_interleave: bool = False
    stereo_per_timestep: bool = False
    compression_n_q: int | None = None

    def __post_init__(self) -> None:
        # Tuples keep the dataclass immutable and comparable even when built from JSON lists.
        conditioners = tuple(
            c if isinstance(c, ConditionerConfig) else ConditionerConfig(**c)
            for c in self.conditioners
        )
        object.__setattr__(self, "conditioners", conditioners)
        for name in ("fuse_cross", "fuse_prepend"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        problems = []
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            problems.append(f"dim {self.dim} must split into {self.num_heads} heads of even width")
        if self.norm != "layer_norm":
            problems.append(f"norm must be 'layer_norm', not {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, not {self.activation!r}")
        if self.positional_embedding != "sin":
            problems.append(
                f"positional_embedding must be 'sin', not {self.positional_embedding!r}"
            )
        if self.pattern not in PATTERNS:
            problems.append(f"pattern must be one of {PATTERNS}, not {self.pattern!r}")
        if len(self.delays) != self.n_q:
            problems.append(f"{len(self.delays)} delays for {self.n_q} codebooks")
        if list(self.delays) != sorted(self.delays) or min(self.delays, default=0) < 0:
            problems.append(f"delays must be non-negative and non-decreasing, not {self.delays}")
        if self.empty_initial < 0:
            # Generation starts after the pattern's empty first step; without one it can't.
            problems.append(f"empty_initial must be >= 0, not {self.empty_initial}")
        names = [c.name for c in self.conditioners]
        unknown = sorted(set(self.fuse_cross + self.fuse_prepend) - set(names))
        if unknown:
            problems.append(f"fused conditions without a conditioner: {', '.join(unknown)}")
        if set(self.fuse_cross) & set(self.fuse_prepend):
            problems.append("a condition is both cross-attended and prepended")
        if self.cross_attention != bool(self.fuse_cross):
            problems.append("cross_attention must be True exactly when fuse_cross is not empty")
        if self.channels not in (1, 2):
            problems.append(f"channels must be 1 or 2, not {self.channels}")
        if problems:
            raise ValueError("invalid LM config: " + "; ".join(problems))

    @property
    def ffn_dim(self) -> int:
        """Feed-forward width, ``int(hidden_scale * dim)`` as audiocraft computes it."""
        return int(self.hidden_scale * self.dim)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.num_heads

    @property
    def condition_order(self) -> tuple[str, ...]:
        """Conditions in the order audiocraft's fuser meets them: text ones, then waveform ones.

        Each prepended condition goes in front of what is already there, so with
        ``fuse_prepend = (self_wav, description)`` the LM input is ``[chroma, text, codes]``.
        """
        text = [c.name for c in self.conditioners if c.is_text]
        return (*text, *(c.name for c in self.conditioners if not c.is_text))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` rebuilds the config."""
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        """Builds a config from :meth:`to_dict` output, rejecting unknown fields."""
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ValueError(f"unknown LM config fields: {', '.join(unknown)}")
        return cls(**data)
