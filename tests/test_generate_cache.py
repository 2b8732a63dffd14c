"""The LM's parameter names and its key/value cache: incremental decoding equals one pass."""

from __future__ import annotations

import json

import pytest
import torch

from audiotok.generate import ConditionerConfig, ConditionTensors, LMConfig, LMModel

TEXT = ConditionerConfig("description", "t5", 32, t5_name="t5-base")
CHROMA = ConditionerConfig("self_wav", "chroma_stem", 12, sample_rate=32_000)
SMALL = dict(n_q=4, card=32, dim=64, num_heads=4, num_layers=2, hidden_scale=2)

CONFIGS = {
    # MusicGen / AudioGen: pre-norm, no biases, text through cross-attention.
    "cross": LMConfig(**SMALL, conditioners=(TEXT,)),
    # MusicGen-melody: chroma and text prepended, no cross-attention.
    "prepend": LMConfig(
        **SMALL,
        conditioners=(CHROMA, TEXT),
        cross_attention=False,
        fuse_cross=(),
        fuse_prepend=("self_wav", "description"),
    ),
    # audiocraft's other options: post-norm, biases, LayerScale, ReLU, positions on the
    # cross-attention source, both fusers at once.
    "options": LMConfig(
        **SMALL,
        conditioners=(CHROMA, TEXT),
        fuse_prepend=("self_wav",),
        norm_first=False,
        bias_proj=True,
        bias_ff=True,
        bias_attn=True,
        layer_scale=0.5,
        activation="relu",
        cross_attention_pos_emb=True,
        positional_scale=0.8,
    ),
    "unconditional": LMConfig(**SMALL, conditioners=(), cross_attention=False, fuse_cross=()),
}


@torch.no_grad()
def random_lm(config: LMConfig, seed: int = 0) -> LMModel:
    """An LM with weights at unit scale (so that every part weighs on the output)."""
    torch.manual_seed(seed)
    model = LMModel(config).eval()
    for p in model.parameters():
        p.copy_(torch.randn_like(p) / (p.shape[-1] ** 0.5 if p.ndim > 1 else 3))
    return model


def random_condition(config: LMConfig, batch: int, seed: int = 0) -> ConditionTensors | None:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for length, spec in zip((5, 7), config.conditioners, strict=False):
        mask = torch.ones(batch, length, dtype=torch.int64)
        mask[-1, length - 2 :] = 0  # padding, zeroed as conditioners zero it
        embeds = torch.randn(batch, length, config.dim, generator=gen) * mask[..., None]
        out[spec.name] = (embeds, mask)
    return ConditionTensors(out) if out else None


def test_parameter_names_are_audiocrafts():
    """Keys of one layer, as audiocraft's ``StreamingTransformerLayer`` (custom attention)
    names them, for the richest option set; and the LM's own keys."""
    keys = set(LMModel(CONFIGS["options"]).state_dict())
    layer = "transformer.layers.1."
    expected = (
        {
            f"{layer}{name}"
            for module in ("self_attn", "cross_attention")
            for name in (
                f"{module}.in_proj_weight",
                f"{module}.in_proj_bias",
                f"{module}.out_proj.weight",
                f"{module}.out_proj.bias",
            )
        }
        | {
            f"{layer}{name}.{p}"
            for name in ("linear1", "linear2", "norm1", "norm2", "norm_cross")
            for p in ("weight", "bias")
        }
        | {f"{layer}layer_scale_{s}.scale" for s in ("1", "2", "cross")}
    )
    assert {k for k in keys if k.startswith(layer)} == expected
    assert {k for k in keys if not k.startswith("transformer.")} == {
        *(f"emb.{k}.weight" for k in range(4)),
        *(f"linears.{k}.{p}" for k in range(4) for p in ("weight", "bias")),
    }  # post-norm: no out_norm
    musicgen = LMModel(CONFIGS["cross"]).state_dict()
    assert musicgen["emb.0.weight"].shape == (33, 64)  # card + 1: the special token
    assert musicgen["transformer.layers.0.self_attn.in_proj_weight"].shape == (192, 64)
    assert "out_norm.weight" in musicgen and "linears.0.bias" not in musicgen


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_incremental_equals_one_pass(name):
    config = CONFIGS[name]
    lm = random_lm(config)
    condition = random_condition(config, batch=2)
    codes = torch.randint(0, 33, (2, 4, 11), generator=torch.Generator().manual_seed(1))
    full = lm(codes, condition)
    assert full.shape == (2, 4, 11, 32)
    # Chunks of several steps after cached ones exercise the explicit causal mask; a small
    # first allocation makes the cache grow.
    cache = lm.new_cache(batch=2, max_steps=4)
    pieces, start = [], 0
    for size in (3, 1, 1, 2, 1, 3):
        pieces.append(lm(codes[..., start : start + size], condition, cache))
        start += size
    torch.testing.assert_close(torch.cat(pieces, dim=2), full, atol=1e-5, rtol=1e-5)
    assert cache.offset == 11 + lm.prefix_length(condition)


@torch.no_grad()
def test_positions_follow_the_cache_offset():
    """The same token after a cached history is not the same as at the start."""
    lm = random_lm(CONFIGS["unconditional"])
    codes = torch.full((1, 4, 1), 5)
    cache = lm.new_cache(batch=1, max_steps=8)
    first = lm(codes, None, cache)
    cache.offset = 0  # forget the history: position 0 again
    torch.testing.assert_close(lm(codes, None, cache), first, atol=0, rtol=0)
    lm(codes, None, cache)
    assert not torch.allclose(lm(codes, None, cache), first, atol=1e-3)


@torch.no_grad()
def test_condition_is_required_and_checked():
    lm = random_lm(CONFIGS["cross"])
    codes = torch.zeros(2, 4, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="description"):
        lm(codes, None)
    with pytest.raises(ValueError, match="batch"):
        lm(codes, random_condition(lm.config, batch=3))
    with pytest.raises(ValueError, match="codebooks"):
        lm(codes[:, :3], random_condition(lm.config, batch=2))
    # The null condition (all zeros) is a valid condition for unconditional generation.
    condition = random_condition(lm.config, batch=2)
    assert lm(codes, condition.null()).isfinite().all()


def test_condition_tensors_cat_pads_with_zeros():
    a = ConditionTensors({"description": (torch.ones(1, 2, 4), torch.ones(1, 2, dtype=torch.long))})
    b = ConditionTensors({"description": (torch.ones(2, 5, 4), torch.ones(2, 5, dtype=torch.long))})
    embeds, mask = ConditionTensors.cat([a, b])["description"]
    assert embeds.shape == (3, 5, 4) and mask.tolist()[0] == [1, 1, 0, 0, 0]
    assert not embeds[0, 2:].any() and embeds[1:].all()
    with pytest.raises(ValueError):
        ConditionTensors.cat([a, ConditionTensors({"self_wav": a["description"]})])


def test_config_round_trips_through_json():
    for config in CONFIGS.values():
        data = json.loads(json.dumps(config.to_dict()))
        assert LMConfig.from_dict(data) == config
    assert CONFIGS["prepend"].condition_order == ("description", "self_wav")
    with pytest.raises(ValueError, match="unknown"):
        LMConfig.from_dict({"n_q": 4, "rope": True})
    with pytest.raises(ValueError, match="delays"):
        LMConfig(n_q=8)
    with pytest.raises(ValueError, match="cross_attention"):
        LMConfig(cross_attention=False)


@torch.no_grad()
def test_bf16_positions_stay_accurate_far_into_the_sequence():
    # bf16 can't hold positions above 256 exactly: the embedding is computed in float32.
    lm = random_lm(CONFIGS["unconditional"])
    codes = torch.randint(0, 32, (1, 4, 1500), generator=torch.Generator().manual_seed(0))
    exact = lm(codes)[:, :, 1000:]
    reduced = lm.to(torch.bfloat16)(codes)[:, :, 1000:].float()
    assert (exact - reduced).abs().mean() < 0.03  # 0.06 with positions rounded in bf16
