"""int8 language models on a CPU (``set_precision("int8")``): every linear layer quantized,
logits close to fp32's, generation working, the precision one-way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from audiotok.generate import GenerationError, MusicGen


def fp32_and(precision: str, directory) -> tuple[MusicGen, MusicGen]:
    """The same tiny random MusicGen twice: fp32 and ``precision``."""
    from generate_reference import save_hf, tiny_musicgen

    directory = save_hf(tiny_musicgen(seed=7), directory)
    fp32 = MusicGen.get_pretrained(directory, device="cpu")
    other = MusicGen.get_pretrained(directory, device="cpu")
    other.set_precision(precision)
    return fp32, other


@pytest.fixture
def pair(tmp_path):
    return fp32_and("int8", tmp_path / "m")


def test_every_linear_layer_is_quantized(pair):
    fp32, int8 = pair
    assert int8.precision == "int8" and fp32.precision == "fp32"
    quantized = nn.quantized.dynamic.Linear
    plain = [n for n, m in int8.lm.named_modules() if type(m) is nn.Linear]
    assert plain == [], plain
    int8_bytes = sum(m.weight().numel() for m in int8.lm.modules() if isinstance(m, quantized))
    fp32_bytes = sum(4 * m.weight.numel() for m in fp32.lm.modules() if isinstance(m, nn.Linear))
    in_proj = sum(4 * p.numel() for n, p in fp32.lm.named_parameters() if "in_proj_weight" in n)
    assert int8_bytes * 4 == fp32_bytes + in_proj, "every weight of a linear map, in one byte"


def test_logits_stay_close_to_fp32(pair):
    """One forward pass of the LM on the same codes and condition: int8 logits within a few
    percent of fp32's range, and the same ranking for most positions."""
    fp32, int8 = pair
    condition = fp32.conditioner(["a lo-fi beat"])
    k, card = fp32.lm.config.n_q, fp32.lm.config.card
    codes = torch.randint(0, card, (1, k, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = fp32.lm(codes, condition), int8.lm(codes, condition)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05 * (ref.max() - ref.min())
    assert torch.corrcoef(torch.stack([ref.flatten(), out.flatten()]))[0, 1] > 0.99


def test_generation_runs_and_the_precision_is_one_way(pair):
    fp32, int8 = pair
    for model in pair:
        model.set_generation_params(duration=0.5, use_sampling=False)
    wav8, codes8 = int8.generate(["a beat", None], return_tokens=True)
    wav32, codes32 = fp32.generate(["a beat", None], return_tokens=True)
    assert wav8.shape == wav32.shape and codes8.shape == codes32.shape
    assert torch.isfinite(wav8).all()
    int8.set_precision("int8")  # again: nothing to do
    with pytest.raises(GenerationError, match="int8 now; load the model again for bf16"):
        int8.set_precision("bf16")
    with pytest.raises(GenerationError, match="one of fp32, bf16, fp16, int8, int4"):
        fp32.set_precision("int2")


@pytest.fixture
def int4_pair(tmp_path):
    return fp32_and("int4", tmp_path / "m")


def test_int4_quantizes_every_linear_layer_to_an_eighth(int4_pair):
    from audiotok.generate.quantize import Int4Linear

    fp32, int4 = int4_pair
    assert int4.precision == "int4"
    plain = [n for n, m in int4.lm.named_modules() if type(m) is nn.Linear]
    assert plain == [], plain  # the tiny model's shapes all fit the kernel
    packed = sum(m.packed.numel() for m in int4.lm.modules() if isinstance(m, Int4Linear))
    fp32_bytes = sum(4 * m.weight.numel() for m in fp32.lm.modules() if isinstance(m, nn.Linear))
    in_proj = sum(4 * p.numel() for n, p in fp32.lm.named_parameters() if "in_proj_weight" in n)
    assert packed * 8 == fp32_bytes + in_proj, "every weight of a linear map, in half a byte"


def test_int4_layer_reads_back_its_groups_and_logits_stay_close(int4_pair):
    from audiotok.generate.quantize import INT4_GROUP, Int4Linear

    torch.manual_seed(0)
    linear = nn.Linear(128, 32)
    layer = Int4Linear(linear)
    x = torch.randn(3, 7, 128)
    # The reference: each group of 64 weights at 16 levels between its min and max.
    w = linear.weight.detach().reshape(32, 128 // INT4_GROUP, INT4_GROUP)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    deq = ((w - low) / scale).round() * scale + low
    expected = x @ deq.reshape(32, 128).t() + linear.bias.detach()
    # bf16 activations and scales: within bf16's rounding of the products.
    assert (layer(x) - expected).abs().max() < 0.02 * expected.abs().max()
    fp32, int4 = int4_pair
    condition = fp32.conditioner(["a lo-fi beat"])
    k, card = fp32.lm.config.n_q, fp32.lm.config.card
    codes = torch.randint(0, card, (1, k, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = fp32.lm(codes, condition), int4.lm(codes, condition)
    assert torch.corrcoef(torch.stack([ref.flatten(), out.flatten()]))[0, 1] > 0.98


def test_int4_generates_and_is_one_way(int4_pair):
    _, int4 = int4_pair
    int4.set_generation_params(duration=0.5, use_sampling=False)
    wav, codes = int4.generate(["a beat", None], return_tokens=True)
    assert torch.isfinite(wav).all() and codes.shape[0] == 2
    with pytest.raises(GenerationError, match="int4 now; load the model again for int8"):
        int4.set_precision("int8")
