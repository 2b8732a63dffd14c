"""Codebook interleaving patterns: worked examples, round trips, and transformers' MusicGen layout.

audiocraft cannot be imported here (it pins old dependencies), so its layout is checked
against the worked examples of its documentation (as corrected in our docstrings) and against
transformers' ``MusicgenForCausalLM.build_delay_pattern_mask``, an independent implementation
of the same delay layout: with ``input_ids = [BOS, codes]``, ``pad = BOS = special`` and
``max_length = T + max_delay + 1``, its pattern mask equals our built sequence.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiotok.errors import CheckpointError, TokensError
from audiotok.generate.patterns import (
    DelayedPatternProvider,
    LayoutCoord,
    ParallelPatternProvider,
    Pattern,
    get_codebooks_pattern_provider,
    interleave_stereo_codes,
    split_stereo_codes,
)

S = -9  # the special token in the worked examples


def timestep_codes(n_q: int, timesteps: int) -> torch.Tensor:
    """``[1, K, T]`` codes whose value is their timestep, as in the docstring matrices."""
    return torch.arange(timesteps).repeat(1, n_q, 1)


def built(provider, timesteps: int) -> list[list[int]]:
    pattern = provider.get_pattern(timesteps)
    sequence, _ = pattern.build_sequence(timestep_codes(provider.n_q, timesteps), S)
    return sequence[0].tolist()


def test_musicgen_delay_worked_example():
    assert built(DelayedPatternProvider(4, [0, 1, 2, 3]), 3) == [
        [S, 0, 1, 2, S, S, S],
        [S, S, 0, 1, 2, S, S],
        [S, S, S, 0, 1, 2, S],
        [S, S, S, S, 0, 1, 2],
    ]


def test_stereo_delay_moves_left_right_pairs_together():
    assert built(DelayedPatternProvider(4, [0, 0, 1, 1]), 3) == [
        [S, 0, 1, 2, S],
        [S, 0, 1, 2, S],
        [S, S, 0, 1, 2],
        [S, S, 0, 1, 2],
    ]


def test_flatten_first_and_parallel_worked_examples():
    assert built(DelayedPatternProvider(2, [0, 1], flatten_first=1), 3) == [
        [S, 0, S, 1, 2, S],
        [S, S, 0, S, 1, 2],
    ]
    assert built(ParallelPatternProvider(2), 3) == [[S, 0, 1, 2], [S, 0, 1, 2]]
    assert built(DelayedPatternProvider(2, empty_initial=1), 2) == [
        [S, S, 0, 1, S],
        [S, S, S, 0, 1],
    ]
    assert built(DelayedPatternProvider(2, empty_initial=-1), 2) == [[0, 1, S], [S, 0, 1]]


def test_mask_marks_the_placed_codes():
    pattern = DelayedPatternProvider(3).get_pattern(2)
    _, mask = pattern.build_sequence(timestep_codes(3, 2), S)
    assert mask.int().tolist() == [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]
    assert pattern.max_delay == 2 and pattern.num_sequence_steps == 4
    assert len(pattern.valid_layout) == 3


def test_steps_with_timestep():
    pattern = DelayedPatternProvider(4).get_pattern(10)
    assert pattern.get_steps_with_timestep(5) == [6, 7, 8, 9]
    assert pattern.get_steps_with_timestep(5, q=2) == [8]
    assert pattern.get_first_step_with_timesteps(0) == 1
    assert pattern.get_first_step_with_timesteps(10) == 11  # beyond the codes: still laid out
    assert pattern.get_last_step_with_timesteps(9) == 13
    with pytest.raises(ValueError):
        pattern.get_steps_with_timestep(11)


delays_strategy = st.integers(1, 6).flatmap(
    lambda n_q: st.lists(st.integers(0, 4), min_size=n_q, max_size=n_q).map(sorted)
)


@settings(max_examples=60, deadline=None)
@given(
    delays=delays_strategy,
    timesteps=st.integers(1, 12),
    flatten_first=st.integers(0, 3),
    empty_initial=st.integers(-1, 2),
    batch=st.integers(1, 3),
)
def test_build_revert_round_trip(delays, timesteps, flatten_first, empty_initial, batch):
    n_q = len(delays)
    provider = DelayedPatternProvider(n_q, delays, flatten_first, empty_initial)
    pattern = provider.get_pattern(timesteps)
    codes = torch.randint(0, 50, (batch, n_q, timesteps))
    sequence, mask = pattern.build_sequence(codes, 50)
    assert sequence.shape == (batch, n_q, len(pattern.layout))
    # every code is placed exactly once, everything else is the special token
    assert int(mask.sum()) == n_q * timesteps
    assert bool((sequence[:, ~mask] == 50).all())
    reverted, reverted_mask = pattern.revert_sequence(sequence, -1)
    assert torch.equal(reverted, codes) and bool(reverted_mask.all())


@pytest.mark.parametrize("n_q", [1, 3])
def test_parallel_round_trip(n_q):
    pattern = ParallelPatternProvider(n_q).get_pattern(7)
    codes = torch.randint(0, 9, (2, n_q, 7))
    sequence, _ = pattern.build_sequence(codes, 9)
    assert sequence.shape == (2, n_q, 8) and bool((sequence[:, :, 0] == 9).all())
    assert torch.equal(pattern.revert_sequence(sequence, -1)[0], codes)


def test_build_with_fewer_timesteps_and_revert_of_a_prefix():
    pattern = DelayedPatternProvider(2).get_pattern(4)
    codes = torch.tensor([[[1, 2], [3, 4]]])
    sequence, _ = pattern.build_sequence(codes, S)
    assert sequence[0].tolist() == [[S, 1, 2, S, S, S], [S, S, 3, 4, S, S]]
    # the first 3 steps hold timestep 0 of both codebooks and timestep 1 of the first only
    reverted, mask = pattern.revert_sequence(sequence[..., :3], -1)
    assert reverted[0].tolist() == [[1, 2, -1, -1], [3, -1, -1, -1]]
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]


def test_revert_logits_skips_the_initial_step():
    # logits at sequence step s predict layout step s + 1: code (t, q) reads step t + delay_q
    delays = [0, 1, 2]
    pattern = DelayedPatternProvider(3, delays).get_pattern(4)
    steps, card = len(pattern.layout), 5
    step_of = torch.arange(steps, dtype=torch.float32)[None, None, :, None]
    logits = (step_of + torch.zeros(2, 3, steps, card)).clone()
    logits[:, :, :, 1] = -step_of[0, :, :, 0]  # card entries must travel together
    out, mask = pattern.revert_logits(logits)
    assert out.shape == (2, 3, 4, card) and bool(mask.all())
    expected = torch.tensor([[t + d for t in range(4)] for d in delays], dtype=torch.float32)
    assert torch.equal(out[0, :, :, 0], expected) and torch.equal(out[1, :, :, 1], -expected)
    # fewer steps: the codes no logit predicts are NaN (the special value)
    out, mask = pattern.revert_logits(logits[:, :, :3])
    assert mask.int().tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert bool(out[:, ~mask].isnan().all()) and not bool(out[:, mask].isnan().any())


def test_teacher_forced_generation_loop_recovers_the_codes():
    """The loop audiocraft's ``LMModel.generate`` runs, with the true codes as the "model"."""
    n_q, timesteps, prompt_len, unknown, special = 4, 9, 3, -1, 2048
    codes = torch.randint(0, 2048, (2, n_q, timesteps))
    pattern = DelayedPatternProvider(n_q).get_pattern(timesteps)
    truth, _ = pattern.build_sequence(codes, special)
    gen_codes = torch.full_like(codes, unknown)
    gen_codes[..., :prompt_len] = codes[..., :prompt_len]
    gen_sequence, mask = pattern.build_sequence(gen_codes, special)
    start = pattern.get_first_step_with_timesteps(prompt_len)
    assert start == prompt_len + 1
    assert not bool((gen_sequence[..., :start] == unknown).any())  # the model's input is known
    for offset in range(start, gen_sequence.shape[-1]):
        next_token = truth[..., offset : offset + 1].clone()
        next_token[~mask[..., offset : offset + 1].expand(2, -1, -1)] = special
        current = gen_sequence[..., offset : offset + 1]
        gen_sequence[..., offset : offset + 1] = torch.where(
            current == unknown, next_token, current
        )
    assert torch.equal(gen_sequence, truth)
    assert torch.equal(pattern.revert_sequence(gen_sequence, unknown)[0], codes)


def transformers_delay_pattern(codes: torch.Tensor, audio_channels: int, special: int, length: int):
    """transformers' pattern mask for ``[BOS, codes]`` (a tiny random MusicGen decoder)."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    batch, n_q, _ = codes.shape
    config = MusicgenDecoderConfig(
        vocab_size=special,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=16,
        num_codebooks=n_q,
        audio_channels=audio_channels,
        pad_token_id=special,
        bos_token_id=special,
    )
    model = MusicgenForCausalLM(config)
    bos = torch.full((batch, n_q, 1), special)
    input_ids = torch.cat([bos, codes], dim=-1).reshape(batch * n_q, -1)
    _, pattern_mask = model.build_delay_pattern_mask(input_ids, special, max_length=length)
    return pattern_mask.reshape(batch, n_q, length)


@pytest.mark.parametrize(
    ("delays", "audio_channels"),
    [([0, 1, 2, 3], 1), ([0, 1], 1), ([0, 0, 1, 1, 2, 2, 3, 3], 2)],
)
@pytest.mark.parametrize("timesteps", [3, 4, 11])
def test_delay_layout_equals_transformers_musicgen(delays, audio_channels, timesteps):
    # transformers skips the pattern when max_length < 2 * K' - 1, i.e. timesteps < K' - 1
    n_q, special = len(delays), 32
    pattern = DelayedPatternProvider(n_q, delays).get_pattern(timesteps)
    length = timesteps + max(delays) + 1
    codes = torch.randint(0, special, (2, n_q, timesteps))
    ours, _ = pattern.build_sequence(codes, special)
    assert ours.shape[-1] == length
    assert torch.equal(ours, transformers_delay_pattern(codes, audio_channels, special, length))
    # A prompt: transformers marks the positions still to generate with -1, as audiocraft's
    # generate lays out codes that are unknown (-1) so far.
    prompt_len = 2
    gen_codes = torch.full_like(codes, -1)
    gen_codes[..., :prompt_len] = codes[..., :prompt_len]
    ours, _ = pattern.build_sequence(gen_codes, special)
    theirs = transformers_delay_pattern(codes[..., :prompt_len], audio_channels, special, length)
    assert torch.equal(ours, theirs)


def test_stereo_interleaving():
    left = torch.tensor([[[10, 11], [20, 21]]])  # [B=1, K=2, T=2]
    right = left + 100
    codes = interleave_stereo_codes(left, right)
    assert codes[0].tolist() == [[10, 11], [110, 111], [20, 21], [120, 121]]  # L0 R0 L1 R1
    per_step = interleave_stereo_codes(left, right, per_timestep=True)
    assert per_step[0].tolist() == [[10, 110, 11, 111], [20, 120, 21, 121]]
    for interleaved, per_timestep in [(codes, False), (per_step, True)]:
        back_left, back_right = split_stereo_codes(interleaved, per_timestep)
        assert torch.equal(back_left, left) and torch.equal(back_right, right)
    with pytest.raises(TokensError):
        split_stereo_codes(torch.zeros(1, 3, 2, dtype=torch.long))


def test_provider_from_an_audiocraft_config():
    cfg = {
        "modeling": "delay",
        "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0, "empty_initial": 0},
    }
    provider = get_codebooks_pattern_provider(4, cfg)
    assert isinstance(provider, DelayedPatternProvider) and provider.delays == [0, 1, 2, 3]
    assert provider.get_pattern(5) is provider.get_pattern(5)
    with pytest.raises(CheckpointError, match="musiclm"):
        get_codebooks_pattern_provider(4, {"modeling": "musiclm"})


def test_bad_input_is_rejected():
    pattern = DelayedPatternProvider(4).get_pattern(5)
    with pytest.raises(TokensError, match="codebooks"):
        pattern.build_sequence(torch.zeros(1, 3, 5, dtype=torch.long), 0)
    with pytest.raises(TokensError, match="timesteps"):
        pattern.build_sequence(torch.zeros(1, 4, 6, dtype=torch.long), 0)
    with pytest.raises(TokensError, match="longer"):
        pattern.revert_sequence(torch.zeros(1, 4, 10, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="non-decreasing"):
        DelayedPatternProvider(2, [1, 0])
    with pytest.raises(ValueError, match="back in time"):
        Pattern([[], [LayoutCoord(1, 0)], [LayoutCoord(0, 0)]], timesteps=2, n_q=1)
    with pytest.raises(ValueError, match="two codes"):
        Pattern([[], [LayoutCoord(0, 0), LayoutCoord(1, 0)]], timesteps=2, n_q=1)
