"""The MusicGen LM against transformers' MusicGen, from both official checkpoint formats.

One random tiny model (see ``generate_reference``) is saved as transformers saves it and as
audiocraft exports it; both load through ``load_lm`` and must give transformers' logits for
the same text and the same codes.
"""

from __future__ import annotations

import pytest
import torch
from generate_reference import (
    CARD,
    CHROMA_LENGTH,
    N_Q,
    audiocraft_cross_attention,
    save_audiocraft,
    save_hf,
    tiny_musicgen,
    tiny_tokenizer,
)

from audiotok.errors import ModelNotAvailableError
from audiotok.generate import ConditionTensors, load_lm

pytest.importorskip("transformers")

ATOL = 1e-5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The transformers model, and its transformers and audiocraft copies on disk."""
    model = tiny_musicgen(seed=0)
    root = tmp_path_factory.mktemp("musicgen")
    hf_dir = save_hf(model, root / "hf")
    export_dir, t5_dir = save_audiocraft(model, root / "audiocraft")
    return model, hf_dir, export_dir, t5_dir


@pytest.fixture(scope="module")
def loaded(reference):
    """Our models, loaded from each format."""
    _, hf_dir, export_dir, t5_dir = reference
    return {
        "hf": load_lm(hf_dir),
        "audiocraft": load_lm(export_dir, text_encoder=t5_dir),
    }


def random_codes(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    """Codes ``[B, K, S]`` including the special token (``CARD``), as a pattern lays them out."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, CARD + 1, (batch, N_Q, steps), generator=gen)


@torch.no_grad()
def hf_logits(model, texts: list[str], codes: torch.Tensor) -> torch.Tensor:
    """transformers' logits ``[B, K, S, card]`` for ``texts`` and decoder input ``codes``."""
    inputs = tiny_tokenizer()(texts, return_tensors="pt", padding=True)
    b, k, s = codes.shape
    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        decoder_input_ids=codes.reshape(b * k, s),
    )
    return out.logits.reshape(b, k, s, -1)


@pytest.mark.parametrize("fmt", ["hf", "audiocraft"])
def test_logits_match_transformers(reference, loaded, fmt):
    model = reference[0]
    lm, conditioner, _, config = loaded[fmt]
    texts = ["lo fi beat with drums", "calm piano song with guitar"]  # equal lengths: no padding
    codes = random_codes(2, 12)
    expected = hf_logits(model, texts, codes)
    with torch.no_grad():
        logits = lm(codes, conditioner(texts))
    assert logits.shape == (2, N_Q, 12, CARD)
    assert expected.abs().mean() > 0.3  # weights at unit scale: the comparison means something
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=1e-5)
    assert (config.n_q, config.card, config.dim, config.delays) == (N_Q, CARD, 64, (0, 1, 2, 3))


def test_both_formats_give_the_same_config_and_codec(loaded):
    (_, _, hf_codec, hf_config), (_, _, ac_codec, ac_config) = loaded["hf"], loaded["audiocraft"]
    assert hf_config.to_dict() | {"conditioners": None} == ac_config.to_dict() | {
        "conditioners": None
    }
    assert ac_config.conditioners[0].t5_name == "t5-base"
    assert ac_config.segment_duration == 30.0 and ac_config.cfg_coef == 3.0
    assert (hf_codec.sample_rate, hf_codec.cardinality) == (32_000, CARD)
    wav = torch.randn(1, 1, 6400, generator=torch.Generator().manual_seed(1))
    hf_tokens, ac_tokens = hf_codec.encode(wav), ac_codec.encode(wav)
    assert torch.equal(hf_tokens.codes, ac_tokens.codes)
    assert hf_tokens.codes.shape[1] == N_Q and hf_tokens.codes.unique().numel() > 4
    assert torch.equal(hf_codec.decode(hf_tokens), ac_codec.decode(ac_tokens))


@torch.no_grad()
def test_padding_and_null_texts_follow_audiocraft(reference, loaded):
    """Unequal texts and a null (None) text, as audiocraft conditions them: T5 over the padded
    batch, the null row's mask zeroed, embeddings multiplied by the mask, and *no* mask in
    cross-attention (transformers' own forward masks it, so its parts are run by hand)."""
    model = reference[0]
    texts = ["lo fi beat with calm piano and drums", "rock", None]
    entries = [t or "" for t in texts]
    inputs = tiny_tokenizer()(entries, return_tensors="pt", padding=True)
    mask = inputs["attention_mask"].clone()
    mask[2] = 0
    hidden = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=mask)[0]
    hidden = model.enc_to_dec_proj(hidden) * mask[..., None]
    codes = random_codes(3, 9, seed=2)
    expected = model.decoder(
        input_ids=codes.reshape(3 * N_Q, 9), encoder_hidden_states=hidden
    ).logits.reshape(3, N_Q, 9, -1)
    for fmt in ("hf", "audiocraft"):
        lm, conditioner, _, _ = loaded[fmt]
        condition = conditioner(texts)
        embeds, cond_mask = condition["description"]
        assert torch.equal(cond_mask, mask) and not embeds[2].any()
        torch.testing.assert_close(lm(codes, condition), expected, atol=ATOL, rtol=1e-5)


@torch.no_grad()
def test_padded_batch_equals_transformers_with_audiocrafts_cross_attention(reference, loaded):
    """A batch of texts of different token lengths: our logits are transformers' MusicGen's
    run as audiocraft conditions (padding zeroed after the projection and *not* masked in
    cross-attention); plain transformers, which masks it, differs on the padded row only."""
    model = reference[0]
    texts = ["lo fi beat with calm piano and drums", "rock"]  # 9 and 2 T5 tokens
    assert tiny_tokenizer()(texts, padding=True)["attention_mask"][1].count(0) == 7
    codes = random_codes(2, 12, seed=4)
    masked = hf_logits(model, texts, codes)
    with audiocraft_cross_attention(model):
        expected = hf_logits(model, texts, codes)
    for fmt in ("hf", "audiocraft"):
        lm, conditioner, _, _ = loaded[fmt]
        logits = lm(codes, conditioner(texts))
        torch.testing.assert_close(logits, expected, atol=ATOL, rtol=1e-5)
    # The unpadded row is the same either way; the padded one is not (the zeroed positions
    # dilute its cross-attention): on this model, by some 40% of the logits' magnitude.
    torch.testing.assert_close(masked[0], expected[0], atol=ATOL, rtol=1e-5)
    difference = (masked[1] - expected[1]).abs().mean()
    assert difference > 0.1 * expected[1].abs().mean()
    assert (masked[1].argmax(-1) != expected[1].argmax(-1)).any()


@torch.no_grad()
def test_cfg_batch_of_condition_and_null(loaded):
    """``cat([cond, cond.null()])`` is what conditioning ``texts + [None] * B`` gives."""
    lm, conditioner, _, _ = loaded["hf"]
    texts = ["lo fi beat", "calm piano song with guitar"]
    joint = conditioner([*texts, None, None])
    cond = conditioner(texts)
    batched = ConditionTensors.cat([cond, cond.null()])
    for (e1, m1), (e2, m2) in zip(joint.tensors.values(), batched.tensors.values(), strict=True):
        torch.testing.assert_close(e1, e2, atol=1e-6, rtol=0)
        assert torch.equal(m1, m2)
    codes = random_codes(4, 6)
    torch.testing.assert_close(lm(codes, joint), lm(codes, batched), atol=ATOL, rtol=1e-5)


@torch.no_grad()
def test_incremental_decoding_matches_transformers(reference, loaded):
    """Steps fed one by one through the cache give transformers' logits for the whole run."""
    model = reference[0]
    lm, conditioner, _, _ = loaded["audiocraft"]
    texts = ["drums"]
    codes = random_codes(1, 7, seed=3)
    expected = hf_logits(model, texts, codes)
    condition = conditioner(texts)
    cache = lm.new_cache(batch=1, max_steps=3)  # too small on purpose: the cache grows
    steps = [lm(codes[..., :2], condition, cache)]
    steps += [lm(codes[..., t : t + 1], condition, cache) for t in range(2, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=2), expected, atol=ATOL, rtol=1e-5)
    assert cache.offset == 7


def test_stereo_checkpoint_config(tmp_path):
    model = tiny_musicgen(seed=5, channels=2)
    lm, conditioner, _, config = load_lm(save_hf(model, tmp_path / "hf"))
    assert (config.n_q, config.channels, config.stereo_interleave) == (8, 2, True)
    assert config.delays == (0, 0, 1, 1, 2, 2, 3, 3)
    texts = ["rock song"]
    codes = torch.randint(0, CARD + 1, (1, 8, 5), generator=torch.Generator().manual_seed(0))
    inputs = tiny_tokenizer()(texts, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs, decoder_input_ids=codes.reshape(8, 5)).logits
        logits = lm(codes, conditioner(texts))
    torch.testing.assert_close(logits.reshape(8, 5, -1), expected, atol=ATOL, rtol=1e-5)


def test_missing_text_encoder_is_one_clear_line(reference, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_lm(reference[2])
    message = str(info.value)
    assert "\n" not in message
    assert "t5-base" in message and "text_encoder=" in message


@torch.no_grad()
def test_melody_logits_match_transformers(tmp_path):
    """MusicGen-melody: chroma and text prepended to the codes, in one pass and step by step."""
    model = tiny_musicgen(seed=7, melody=True)
    lm, conditioner, _, config = load_lm(save_hf(model, tmp_path / "hf"))
    assert (config.cross_attention, config.fuse_prepend) == (False, ("self_wav", "description"))
    texts = ["lo fi beat with drums", "calm piano song with guitar"]
    gen = torch.Generator().manual_seed(3)
    chroma = torch.nn.functional.one_hot(torch.randint(0, 12, (2, 5), generator=gen), 12).float()
    codes = random_codes(2, 6, seed=4)
    inputs = tiny_tokenizer()(texts, return_tensors="pt")
    out = model(**inputs, input_features=chroma, decoder_input_ids=codes.reshape(2 * N_Q, 6))
    expected = out.logits.reshape(2, N_Q, -1, CARD)[:, :, -6:]
    # transformers repeats the chromagram to its training length; audiocraft does it before
    # the projection (match_len_on_eval), which is the chroma extractor's business.
    condition = conditioner(texts, chroma=chroma.repeat(1, CHROMA_LENGTH // 5, 1))
    torch.testing.assert_close(lm(codes, condition), expected, atol=ATOL, rtol=1e-5)
    cache = lm.new_cache(batch=2, max_steps=lm.prefix_length(condition) + 6)
    steps = [lm(codes[..., t : t + 1], condition, cache) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=2), expected, atol=ATOL, rtol=1e-5)
