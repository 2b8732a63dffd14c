"""Next-token sampling: greedy, top-k, top-p, temperature, CFG, seeded generators.

The kept token sets are checked against transformers' logits warpers (an independent
implementation); the exact random draws against plain ``torch.multinomial`` on the filtered
distribution, which is how audiocraft draws.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    ClassifierFreeGuidanceLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from audiotok.generate.sampling import (
    classifier_free_guidance,
    multinomial,
    sample_next_token,
    sample_top_k,
    sample_top_p,
    split_classifier_free_guidance,
    top_k_filter,
    top_p_filter,
)


def random_logits(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_greedy_is_argmax():
    logits = random_logits(2, 4, 50)
    expected = logits.argmax(-1, keepdim=True)
    assert torch.equal(sample_next_token(logits), expected)
    assert torch.equal(sample_next_token(logits, use_sampling=True, temp=0.0), expected)
    hand = torch.tensor([[[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]]])
    assert sample_next_token(hand).tolist() == [[[1], [0]]]


def test_top_k_of_one_is_argmax():
    logits = random_logits(3, 4, 100)
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        tokens = sample_next_token(logits, use_sampling=True, top_k=1, generator=generator)
        assert torch.equal(tokens, logits.argmax(-1, keepdim=True))


@pytest.mark.parametrize("options", [{}, {"top_k": 10}, {"top_p": 0.8}, {"temp": 0.7}])
def test_seeded_generators_are_reproducible(options):
    logits = random_logits(4, 8, 200, scale=1.0)

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sample_next_token(logits, use_sampling=True, generator=generator, **options)

    first = draw(1)
    assert first.shape == (4, 8, 1) and first.dtype == torch.int64
    assert torch.equal(first, draw(1))
    assert not torch.equal(first, draw(2))  # 32 draws over broad distributions


def test_draws_are_multinomial_on_the_filtered_distribution():
    """Same random state -> same token as drawing from the filtered probs directly."""
    probs = torch.softmax(random_logits(2, 4, 64, scale=1.0) / 0.9, dim=-1)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = torch.multinomial(top_k_filter(probs, 7).reshape(-1, 64), 1, generator=g2)
    assert torch.equal(sample_top_k(probs, 7, generator=g1), expected.reshape(2, 4, 1))

    probs_sort, probs_idx = top_p_filter(probs, 0.5)
    g1, g2 = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    draws = torch.multinomial(probs_sort.reshape(-1, 64), 1, generator=g2).reshape(2, 4, 1)
    assert torch.equal(sample_top_p(probs, 0.5, generator=g1), probs_idx.gather(-1, draws))

    # without a generator, torch's global RNG is used (so torch.manual_seed reproduces)
    torch.manual_seed(7)
    ours = sample_next_token(probs.log(), use_sampling=True, top_k=0)
    torch.manual_seed(7)
    assert torch.equal(ours, multinomial(torch.softmax(probs.log(), dim=-1), 1))


def test_top_p_hand_example():
    probs = torch.tensor([0.2, 0.5, 0.3])
    probs_sort, probs_idx = top_p_filter(probs, 0.6)
    assert probs_idx.tolist() == [1, 2, 0]
    assert torch.allclose(probs_sort, torch.tensor([0.625, 0.375, 0.0]))
    # the most probable token is kept even when it alone exceeds p
    assert top_p_filter(probs, 0.1)[0].tolist() == [1.0, 0.0, 0.0]
    draws = sample_top_p(probs.repeat(2000, 1), 0.6, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) == {1, 2}
    assert probs.tolist() == pytest.approx([0.2, 0.5, 0.3])  # the input is left alone


def test_top_k_keeps_ties_and_large_k():
    probs = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.1])
    assert top_k_filter(probs, 2).tolist() == pytest.approx([0, 0.5, 0.5, 0, 0])
    assert top_k_filter(probs, 4).tolist() == pytest.approx(probs.tolist())  # ties at the 4th
    assert torch.allclose(top_k_filter(probs, 250), probs)  # k beyond the vocabulary


@pytest.mark.parametrize("top_k", [1, 5, 40])
def test_top_k_keeps_the_same_tokens_as_transformers(top_k):
    logits = random_logits(16, 100, seed=top_k)
    temp = 0.8
    ours = top_k_filter(torch.softmax(logits / temp, dim=-1), top_k) > 0
    scores = TopKLogitsWarper(top_k)(None, TemperatureLogitsWarper(temp)(None, logits))
    assert torch.equal(ours, scores > -float("inf"))


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_keeps_the_same_tokens_as_transformers(top_p):
    logits = random_logits(32, 100, seed=int(top_p * 100), scale=2.0)
    probs = torch.softmax(logits, dim=-1)
    probs_sort, probs_idx = top_p_filter(probs, top_p)
    ours = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, probs_idx, probs_sort > 0)
    theirs = TopPLogitsWarper(top_p)(None, logits) > -float("inf")
    # The two differ only when the mass before a token is p up to rounding (transformers
    # drops it, audiocraft keeps it); skip such rows, of which random logits have none.
    sorted_probs = probs.double().sort(dim=-1, descending=True).values
    before = sorted_probs.cumsum(-1) - sorted_probs
    clear = ((before - top_p).abs() > 1e-5).all(-1)
    assert int(clear.sum()) >= 30
    assert torch.equal(ours[clear], theirs[clear])
    assert bool((ours.sum(-1) >= 1).all())


def test_classifier_free_guidance_hand_example():
    cond, uncond = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert classifier_free_guidance(cond, uncond, 3.0).tolist() == [[3.0, -2.0]]
    assert torch.equal(classifier_free_guidance(cond, uncond, 1.0), cond)
    assert split_classifier_free_guidance(torch.cat([cond, uncond]), 3.0).tolist() == [[3.0, -2.0]]
    with pytest.raises(ValueError, match="doubled"):
        split_classifier_free_guidance(torch.zeros(3, 2), 3.0)


def test_classifier_free_guidance_equals_transformers():
    # transformers applies it to the [2 * B * K, card] scores of MusicGen, cond half first
    all_logits = random_logits(2 * 3 * 4, 64)
    input_ids = torch.zeros(3 * 4, 1, dtype=torch.long)
    theirs = ClassifierFreeGuidanceLogitsProcessor(3.0)(input_ids, all_logits)
    ours = split_classifier_free_guidance(all_logits.reshape(2 * 3, 4, 64), 3.0)
    assert torch.equal(ours.reshape(3 * 4, 64), theirs)


def test_temperature_sharpens_the_distribution():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]]).repeat(1, 2000, 1)
    generator = torch.Generator().manual_seed(0)
    cold = sample_next_token(logits, use_sampling=True, temp=0.1, generator=generator)
    hot = sample_next_token(logits, use_sampling=True, temp=10.0, generator=generator)
    assert (cold == 0).float().mean() > 0.99
    assert set(hot.flatten().tolist()) == {0, 1, 2, 3}
