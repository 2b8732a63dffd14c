"""The generation loop against transformers' MusicGen ``generate``, and audiocraft's windows.

Greedy decoding must give exactly transformers' tokens for the same weights and text, with
classifier-free guidance (``guidance_scale=3``) and without (``1``), from scratch and from a
prompt. Texts of a batch have equal lengths, except in the padded-batch test: transformers
masks padded text in cross-attention, audiocraft does not (see ``conditioners``), so there
the reference is transformers run with audiocraft's cross-attention.
"""

from __future__ import annotations

import pytest
import torch
from generate_reference import (
    N_Q,
    audiocraft_cross_attention,
    save_hf,
    tiny_musicgen,
    tiny_tokenizer,
)

from audiotok.errors import AudiotokError
from audiotok.generate import MusicGen, SamplingParams, TokenGeneration, generate_tokens
from audiotok.generate.generation import pattern_provider
from audiotok.generate.windows import Window, plan_windows

pytest.importorskip("transformers")

TEXTS = ["lo fi beat with drums", "calm piano song with guitar"]  # equal token lengths
GREEDY = SamplingParams(use_sampling=False, cfg_coef=3.0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """transformers' tiny MusicGen and ours, loaded from its ``save_pretrained`` directory."""
    model = tiny_musicgen(seed=0)
    hf_dir = save_hf(model, tmp_path_factory.mktemp("loop") / "hf")
    return model, MusicGen.get_pretrained(hf_dir, device="cpu")


@torch.no_grad()
def transformers_codes(model, texts, frames, guidance, prompt=None):
    """Codes ``[B, K, frames]`` of transformers' greedy ``generate`` (caught on their way to
    the codec: ``generate`` returns audio)."""
    inputs = tiny_tokenizer()(texts, return_tensors="pt", padding=True)
    if prompt is not None:
        inputs["decoder_input_ids"] = prompt.reshape(-1, prompt.shape[-1])
    caught = []
    decode = model.audio_encoder.decode

    def catch(codes, *args, **kwargs):
        caught.append(codes[0])
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = catch
    try:
        # max_length counts transformers' BOS column and the K - 1 delay steps.
        model.generate(**inputs, do_sample=False, guidance_scale=guidance, max_length=frames + N_Q)
    finally:
        model.audio_encoder.decode = decode
    return caught[0]


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_greedy_tokens_equal_transformers(reference, guidance):
    model, ours = reference
    frames = 30
    ours.set_generation_params(use_sampling=False, duration=frames / 50, cfg_coef=guidance)
    wav, codes = ours.generate(TEXTS, return_tokens=True)
    expected = transformers_codes(model, TEXTS, frames, guidance)
    assert codes.shape == (2, N_Q, frames) and wav.shape == (2, 1, frames * 640)
    assert torch.equal(codes, expected)
    assert codes.unique().numel() > 16  # not a degenerate, constant output
    # Rows of a batch are generated independently: each equals its own run.
    assert torch.equal(ours.generate(TEXTS[1:], return_tokens=True)[1], codes[1:])


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_padded_batch_follows_audiocraft(reference, guidance):
    """Texts of different token lengths: our greedy tokens are transformers' with audiocraft's
    cross-attention (zeroed padding attended, not masked); plain transformers differs on the
    padded row. That row also differs from the same text generated alone, as in audiocraft:
    the padding it was batched with takes part in its cross-attention."""
    model, ours = reference
    texts = ["lo fi beat with calm piano and drums", "rock"]  # 9 and 2 T5 tokens
    frames = 30
    ours.set_generation_params(use_sampling=False, duration=frames / 50, cfg_coef=guidance)
    codes = ours.generate(texts, return_tokens=True)[1]
    with audiocraft_cross_attention(model):
        expected = transformers_codes(model, texts, frames, guidance)
    assert torch.equal(codes, expected)
    masked = transformers_codes(model, texts, frames, guidance)
    assert torch.equal(masked[0], codes[0])
    assert (masked[1] != codes[1]).sum() > codes[1].numel() // 2  # a real difference
    # transformers' masked row is the text's own run; ours is not, audiocraft's is not.
    alone = ours.generate(texts[1:], return_tokens=True)[1]
    assert torch.equal(masked[1:], alone) and not torch.equal(codes[1:], alone)
    assert torch.equal(ours.generate(texts[:1], return_tokens=True)[1], codes[:1])


def test_greedy_continuation_equals_transformers(reference):
    model, ours = reference
    prompt = torch.randint(0, 64, (2, N_Q, 7), generator=torch.Generator().manual_seed(1))
    cond, null = ours.conditioner(TEXTS), ours.conditioner([None, None])
    codes = generate_tokens(ours.lm, cond, null, prompt=prompt, max_gen_len=25, params=GREEDY)
    assert torch.equal(codes[..., :7], prompt)
    assert torch.equal(codes, transformers_codes(model, TEXTS, 25, 3.0, prompt))
    only_new = generate_tokens(
        ours.lm, cond, null, prompt=prompt, max_gen_len=25, params=GREEDY, remove_prompts=True
    )
    assert torch.equal(only_new, codes[..., 7:])


def test_timesteps_are_handed_out_as_soon_as_final(reference):
    """With the delay pattern, timestep ``t`` is complete after step ``1 + t + 3``."""
    _, ours = reference
    cond, null = ours.conditioner(TEXTS[:1]), ours.conditioner([None])
    prompt = torch.randint(0, 64, (1, N_Q, 3), generator=torch.Generator().manual_seed(2))
    events = []
    run = TokenGeneration(
        ours.lm, pattern_provider(ours.config), cond, null, prompt, None, 12, GREEDY,
        callback=lambda done, total: events.append(("step", done, total)),
    )  # fmt: skip
    chunks = []
    for codes in run:
        events.append(("codes", len(chunks)))
        chunks.append(codes)
    assert all(c.shape == (1, N_Q, 1) for c in chunks) and len(chunks) == 12 - 3
    assert torch.equal(torch.cat(chunks, dim=-1), run.result()[..., 3:])
    # generation starts at step 4 (the first holding timestep 3), S = 12 + 3 + 1 = 16 steps
    steps = [e for e in events if e[0] == "step"]
    assert [s[1] for s in steps] == list(range(1, 13)) and {s[2] for s in steps} == {12}
    for k in range(len(chunks)):  # timestep 3 + k completes at step 7 + k: the 4 + k-th
        assert events[events.index(("codes", k)) - 1] == ("step", 4 + k, 12)


def test_two_step_cfg_equals_one_pass_with_the_models_coefficient(reference):
    """Null text is zero, so two passes give the one-pass logits; as in audiocraft, the
    two-step path guides with the model's ``cfg_coef`` (3), whatever is passed."""
    _, ours = reference
    cond, null = ours.conditioner(TEXTS), ours.conditioner([None, None])
    one_pass = generate_tokens(ours.lm, cond, null, max_gen_len=20, params=GREEDY)
    two_step = SamplingParams(use_sampling=False, cfg_coef=1.0, two_step_cfg=True)
    assert torch.equal(generate_tokens(ours.lm, cond, null, max_gen_len=20, params=two_step),
                       one_pass)  # fmt: skip
    unguided = SamplingParams(use_sampling=False, cfg_coef=1.0)
    assert not torch.equal(generate_tokens(ours.lm, cond, null, max_gen_len=20, params=unguided),
                           one_pass)  # fmt: skip


def test_sampling_uses_the_global_rng_or_a_generator(reference):
    _, ours = reference
    cond, null = ours.conditioner(TEXTS[:1]), ours.conditioner([None])

    def sample(generator=None):
        params = SamplingParams(top_k=20)
        return generate_tokens(ours.lm, cond, null, max_gen_len=15, params=params,
                               generator=generator)  # fmt: skip

    torch.manual_seed(0)
    first = sample()
    torch.manual_seed(0)
    assert torch.equal(sample(), first)
    assert not torch.equal(sample(), first)  # the global state moved on
    seeded = sample(torch.Generator().manual_seed(5))
    assert torch.equal(sample(torch.Generator().manual_seed(5)), seeded)
    assert not torch.equal(sample(torch.Generator().manual_seed(6)), seeded)


def test_bad_loop_inputs(reference):
    _, ours = reference
    cond, null = ours.conditioner(TEXTS), ours.conditioner([None, None])
    with pytest.raises(AudiotokError, match="shorter than the generation"):
        generate_tokens(ours.lm, cond, null, prompt=torch.zeros(2, N_Q, 5, dtype=torch.long),
                        max_gen_len=5)  # fmt: skip
    with pytest.raises(AudiotokError, match="2 conditions for a prompt of batch 1"):
        generate_tokens(ours.lm, cond, null, prompt=torch.zeros(1, N_Q, 2, dtype=torch.long))


# --- extended generation: audiocraft's windows ---------------------------------------------


def audiocraft_windows(duration, max_duration, frame_rate, extend_stride, prompt_len):
    """audiocraft 1.3.0's ``BaseGenModel._generate_tokens``, transcribed, with ``lm.generate``
    replaced by a stub: ``(prompt length, max_gen_len)`` of each call and the total frames."""
    calls = []

    def lm_generate(prompt_tokens, max_gen_len):
        start_offset = prompt_tokens.shape[-1] if prompt_tokens is not None else 0
        assert start_offset < max_gen_len  # as audiocraft's LMModel.generate
        calls.append((start_offset, max_gen_len))
        new = torch.zeros(max_gen_len - start_offset, dtype=torch.long)
        return new if prompt_tokens is None else torch.cat([prompt_tokens, new])

    prompt_tokens = torch.zeros(prompt_len, dtype=torch.long) if prompt_len else None
    total_gen_len = int(duration * frame_rate)
    current_gen_offset = 0
    if duration <= max_duration:
        return calls, lm_generate(prompt_tokens, total_gen_len).shape[-1]
    all_tokens = [] if prompt_tokens is None else [prompt_tokens]
    prompt_length = 0 if prompt_tokens is None else prompt_tokens.shape[-1]
    stride_tokens = int(frame_rate * extend_stride)
    while current_gen_offset + prompt_length < total_gen_len:
        time_offset = current_gen_offset / frame_rate
        chunk_duration = min(duration - time_offset, max_duration)
        max_gen_len = int(chunk_duration * frame_rate)
        gen_tokens = lm_generate(prompt_tokens, max_gen_len)
        if prompt_tokens is None:
            all_tokens.append(gen_tokens)
        else:
            all_tokens.append(gen_tokens[prompt_tokens.shape[-1] :])
        prompt_tokens = gen_tokens[stride_tokens:]
        prompt_length = prompt_tokens.shape[-1]
        current_gen_offset += stride_tokens
    return calls, torch.cat(all_tokens).shape[-1]


def test_windows_worked_example():
    assert plan_windows(50, 30, 50, 18) == [
        Window(0, 0.0, 1500, 0),
        Window(900, 18.0, 1500, 600),
        Window(1800, 36.0, 700, 600),
    ]
    assert plan_windows(12, 30, 50, 18, prompt_len=100) == [Window(0, 0.0, 600, 100)]


@pytest.mark.parametrize(
    ("duration", "max_duration", "frame_rate", "stride", "prompt_len"),
    [
        (50, 30, 50, 18, 0),
        (60, 30, 50, 18, 250),
        (30, 30, 50, 18, 0),
        (31, 30, 50, 18, 0),
        (47.5, 30, 50, 10, 7),
        (25, 10, 50, 2, 0),  # AudioGen
        (0.9, 0.4, 50, 0.2, 0),
        (1.37, 0.5, 50, 0.31, 3),
        (33.3, 30, 31.25, 18, 0),
    ],
)
def test_windows_follow_audiocrafts_loop(duration, max_duration, frame_rate, stride, prompt_len):
    calls, total = audiocraft_windows(duration, max_duration, frame_rate, stride, prompt_len)
    windows = plan_windows(duration, max_duration, frame_rate, stride, prompt_len)
    assert [(w.prompt_len, w.max_gen_len) for w in windows] == calls
    assert prompt_len + sum(w.new_frames for w in windows) == total == int(duration * frame_rate)


def test_a_window_with_nothing_to_add_ends_the_plan():
    """47.3 s with a 10 s stride: float truncation leaves the 4th window's prompt as long as
    the window; audiocraft fails its assertion there, we stop a frame short."""
    with pytest.raises(AssertionError):
        audiocraft_windows(47.3, 30, 50, 10, 0)
    windows = plan_windows(47.3, 30, 50, 10)
    assert [(w.prompt_len, w.max_gen_len) for w in windows] == [
        (0, 1500), (1000, 1500), (1000, 1364),
    ]  # fmt: skip
    assert sum(w.new_frames for w in windows) == int(47.3 * 50) - 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 30, 50, 18, 500), "prompt .* must be shorter"),
        ((40, 30, 50, 18, 1500), "prompt .* must be shorter"),
        ((40, 30, 50, 30), "extend_stride < 30"),
        ((40, 30, 50, None), "extend_stride < 30"),
        ((40, 30, 50, 0.001), "less than one frame"),
        ((0.01, 30, 50, 18), "less than one frame"),
    ],
)
def test_window_errors(args, message):
    with pytest.raises(AudiotokError, match=message):
        plan_windows(*args)
