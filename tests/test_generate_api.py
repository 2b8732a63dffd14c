"""audiocraft's generation API (``MusicGen``, ``AudioGen``) on tiny random models.

Models come from ``generate_reference`` (transformers' MusicGen with random weights, saved in
transformers' and audiocraft's formats) and load with ``MusicGen.get_pretrained(path)``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from generate_reference import CHROMA_LENGTH, N_Q, save_audiocraft, save_hf, tiny_musicgen

import audiotok.generate.genmodel as genmodel
from audiotok import Tokens
from audiotok.errors import AudiotokError
from audiotok.generate import AudioGen, MusicGen, SamplingParams, generate_tokens, load_lm

pytest.importorskip("transformers")

TEXTS = ["lo fi beat with drums", "calm piano song with guitar"]
HOP = 640  # the tiny codec: 32 kHz, 50 frames/s


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    model = tiny_musicgen(seed=0)
    export, t5 = save_audiocraft(model, root / "audiocraft")
    return {"hf": save_hf(model, root / "hf"), "export": export, "t5": t5}


@pytest.fixture(scope="module")
def musicgen(dirs):
    return MusicGen.get_pretrained(dirs["hf"], device="cpu")


def greedy(model, duration, **kwargs):
    model.set_generation_params(use_sampling=False, duration=duration, **kwargs)
    return model


def test_defaults_and_properties_are_audiocrafts(dirs, musicgen):
    assert (musicgen.sample_rate, musicgen.frame_rate, musicgen.audio_channels) == (32000, 50, 1)
    fresh = MusicGen("tiny", load_lm(dirs["hf"]))
    assert (fresh.max_duration, fresh.duration, fresh.extend_stride) == (30.0, 15.0, 18.0)
    assert fresh.generation_params == {
        "use_sampling": True, "temp": 1.0, "top_k": 250, "top_p": 0.0, "cfg_coef": 3.0,
        "two_step_cfg": False,
    }  # fmt: skip
    fresh.set_generation_params()
    assert fresh.duration == 30.0 and fresh.seed is None
    audiogen = AudioGen("tiny", load_lm(dirs["hf"]), max_duration=10)
    assert (audiogen.duration, audiogen.extend_stride) == (5.0, 2.0)
    audiogen.set_generation_params()
    assert audiogen.duration == 10.0 and fresh.compression_model is fresh.codec
    assert greedy(audiogen, 0.1).generate(["rock"]).shape == (1, 1, 5 * HOP)


def test_get_pretrained_names_and_default_device(dirs, monkeypatch):
    """audiocraft's short names map to Hugging Face ids (with its deprecation warning); the
    device defaults to a GPU when there is one."""
    import audiotok.generate.musicgen as musicgen_module

    calls = []

    def fake_load_lm(name, device, text_encoder):
        calls.append((name, device, text_encoder))
        return load_lm(dirs["hf"])

    monkeypatch.setattr(musicgen_module, "load_lm", fake_load_lm)
    with pytest.warns(UserWarning, match="facebook/musicgen-small"):
        model = MusicGen.get_pretrained("small")
    assert model.name == "facebook/musicgen-small"
    expected = "cuda" if torch.cuda.device_count() else "cpu"
    assert calls == [("facebook/musicgen-small", expected, None)]
    MusicGen.get_pretrained(device="cpu", text_encoder="t5")
    assert calls[-1] == ("facebook/musicgen-melody", "cpu", "t5")  # audiocraft's default model


def test_both_checkpoint_formats_generate_the_same(dirs, musicgen):
    export = MusicGen.get_pretrained(dirs["export"], device="cpu", text_encoder=dirs["t5"])
    a = greedy(musicgen, 0.3).generate(TEXTS, return_tokens=True)
    b = greedy(export, 0.3).generate(TEXTS, return_tokens=True)
    assert torch.equal(a[1], b[1]) and a[1].shape == (2, N_Q, 15)
    assert a[0].shape == (2, 1, 15 * HOP) and a[0].dtype == torch.float32
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)


def test_text_encoders_without_their_vocabulary_or_weights_are_refused(dirs, tmp_path):
    """Without the tokenizer files every word was <unk> (every prompt the same music); without
    some T5 weights transformers drew them at random (--seed no longer reproduced). Both ran."""
    import shutil

    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, models

    from audiotok.errors import CheckpointError, ModelNotAvailableError

    hf = shutil.copytree(dirs["hf"], tmp_path / "hf")
    t5 = shutil.copytree(dirs["t5"], tmp_path / "t5")
    for folder in (hf, t5):
        for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model"):
            (folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelNotAvailableError, match=r"hf: no tokenizer\.json, the T5 tok"):
        MusicGen.get_pretrained(hf, device="cpu")
    with pytest.raises(ModelNotAvailableError, match=r"t5: no tokenizer\.json; a T5 encoder"):
        MusicGen.get_pretrained(dirs["export"], device="cpu", text_encoder=t5)
    # Another model's tokenizer (here of the three specials alone): every word <unk>.
    specials = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2}, unk_token="<unk>"))
    specials.save(str(t5 / "tokenizer.json"))
    with pytest.raises(ModelNotAvailableError, match=r"tokenizer has 3 tokens for a text enc"):
        MusicGen.get_pretrained(dirs["export"], device="cpu", text_encoder=t5)
    half = shutil.copytree(dirs["t5"], tmp_path / "half")
    weights = load_file(half / "model.safetensors")
    dropped = dict(list(weights.items())[: len(weights) // 2])
    save_file(dropped, half / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"T5 encoder weights missing \("):
        MusicGen.get_pretrained(dirs["export"], device="cpu", text_encoder=half)


def test_unconditional_generation(musicgen):
    musicgen.set_generation_params(duration=0.2, seed=3)
    wav, codes = musicgen.generate_unconditional(3, return_tokens=True)
    assert wav.shape == (3, 1, 10 * HOP) and codes.shape == (3, N_Q, 10)
    assert torch.equal(musicgen.generate([None, None, None], return_tokens=True)[1], codes)
    assert not torch.equal(codes[0], codes[1])  # samples of a batch differ


def test_seeds_make_generation_reproducible(musicgen):
    musicgen.set_generation_params(duration=0.3, seed=7)
    first = musicgen.generate(TEXTS[:1], return_tokens=True)[1]
    assert torch.equal(musicgen.generate(TEXTS[:1], return_tokens=True)[1], first)
    musicgen.set_generation_params(duration=0.3, seed=8)
    assert not torch.equal(musicgen.generate(TEXTS[:1], return_tokens=True)[1], first)
    musicgen.set_generation_params(duration=0.3)  # no seed: torch's global RNG, as audiocraft
    torch.manual_seed(1)
    a = musicgen.generate(TEXTS[:1], return_tokens=True)[1]
    torch.manual_seed(1)
    assert torch.equal(musicgen.generate(TEXTS[:1], return_tokens=True)[1], a)


def test_continuation_keeps_the_prompt(musicgen):
    """The prompt's codes start the output, and the rest is what the LM generates after
    them; a greedy run continued from its own first frames reproduces itself."""
    greedy(musicgen, 0.4)
    prompt = torch.randn(2, 2, 3200, generator=torch.Generator().manual_seed(0)) * 0.1
    wav, codes = musicgen.generate_continuation(prompt, 16000, TEXTS, return_tokens=True)
    assert codes.shape == (2, N_Q, 20) and wav.shape == (2, 1, 20 * HOP)
    expected_prompt = musicgen.codec.encode(prompt, sample_rate=16000).codes
    assert expected_prompt.shape[-1] == 10 and torch.equal(codes[..., :10], expected_prompt)
    cond, null = musicgen.conditioner(TEXTS), musicgen.conditioner([None, None])
    params = SamplingParams(use_sampling=False, cfg_coef=3.0)
    again = generate_tokens(musicgen.lm, cond, null, prompt=codes[..., :10], max_gen_len=20,
                            params=params)  # fmt: skip
    assert torch.equal(again, codes)
    full = musicgen.generate(TEXTS, return_tokens=True)[1]
    resumed = generate_tokens(musicgen.lm, cond, null, prompt=full[..., :6], max_gen_len=20,
                              params=params)  # fmt: skip
    assert torch.equal(resumed, full)
    single = musicgen.generate_continuation(prompt[0], 16000, None, return_tokens=True)[1]
    assert single.shape == (1, N_Q, 20) and torch.equal(single[..., :10], codes[:1, :, :10])


def test_extended_generation_stitches_windows(dirs, monkeypatch):
    """Windows of 0.4 s, 0.2 s apart: each window is prompted with the previous one's last
    10 frames, which the output keeps from the previous window."""
    model = MusicGen("tiny", load_lm(dirs["hf"]), max_duration=0.4)
    model.set_generation_params(duration=0.9, extend_stride=0.2, seed=0, top_k=10)
    runs = []

    class Recorded(genmodel.TokenGeneration):
        def __iter__(self):
            yield from super().__iter__()
            runs.append((self.prompt_len, self.result()))

    monkeypatch.setattr(genmodel, "TokenGeneration", Recorded)
    seen = []
    model.set_custom_progress_callback(lambda done, total: seen.append((done, total)))
    wav, codes = model.generate(TEXTS, return_tokens=True)
    model.set_custom_progress_callback(None)
    assert codes.shape == (2, N_Q, 45) and wav.shape == (2, 1, 45 * HOP)
    assert [(p, r.shape[-1]) for p, r in runs] == [(0, 20), (10, 20), (10, 20), (10, 15)]
    for (_, previous), (prompt_len, current) in itertools.pairwise(runs):
        assert torch.equal(current[..., :prompt_len], previous[..., 10:])
    stitched = torch.cat([runs[0][1]] + [r[..., p:] for p, r in runs[1:]], dim=-1)
    assert torch.equal(stitched, codes)
    # progress over the whole generation: 4 windows of S - start = 20 + 3, 20 + 3 - 10, ...
    assert [d for d, _ in seen] == list(range(1, 23 + 13 + 13 + 8 + 1))
    assert {t for _, t in seen} == {57}
    # a continuation: the prompt (5 frames) opens the first window and the output
    runs.clear()
    prompt = torch.randn(1, 1, 5 * HOP, generator=torch.Generator().manual_seed(2)) * 0.1
    codes = model.generate_continuation(prompt, 32000, TEXTS[:1], return_tokens=True)[1]
    assert codes.shape == (1, N_Q, 45) and runs[0][0] == 5
    assert torch.equal(codes[..., :5], model.codec.encode(prompt).codes)
    assert torch.equal(codes[..., :20], runs[0][1])


def test_stream_equals_offline_decode(musicgen):
    """The tiny codec is not causal, as MusicGen's: its stream emits audio a few frames late."""
    musicgen.set_generation_params(duration=0.6, seed=0)
    chunks = list(musicgen.generate_stream(TEXTS, chunk_duration=0.1))
    assert len(chunks) > 3 and all(c.shape[:2] == (2, 1) for c in chunks)
    codes = musicgen.last_codes
    assert codes.shape == (2, N_Q, 30)
    offline = musicgen.generate_audio(codes)
    torch.testing.assert_close(torch.cat(chunks, dim=-1), offline, atol=1e-5, rtol=0)
    assert torch.equal(musicgen.generate(TEXTS, return_tokens=True)[1], codes)  # same seed
    prompt = offline[:1, :, : 8 * HOP]
    chunks = list(musicgen.generate_stream(prompt=prompt, prompt_sample_rate=32000))
    assert torch.equal(musicgen.last_codes[..., :8], musicgen.codec.encode(prompt).codes)
    torch.testing.assert_close(
        torch.cat(chunks, dim=-1), musicgen.generate_audio(musicgen.last_codes), atol=1e-5, rtol=0
    )


def causal_codec(directory):
    """A tiny causal 32 kHz EnCodec with 4 codebooks of 64 (streamable frame by frame)."""
    from reference_models import perturb_
    from transformers import EncodecConfig, EncodecModel

    from audiotok import load_codec

    config = EncodecConfig(
        sampling_rate=32_000, audio_channels=1, hidden_size=16, num_filters=4,
        upsampling_ratios=[8, 5, 4, 4], codebook_size=64, target_bandwidths=[1.2],
        use_causal_conv=True, pad_mode="constant", num_lstm_layers=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = EncodecModel(config).eval()
    perturb_(model, 0)
    model.save_pretrained(directory)
    return load_codec(directory)


def test_stream_with_a_causal_codec(dirs, tmp_path):
    lm, conditioner, _, config = load_lm(dirs["hf"])
    model = MusicGen("causal", (lm, conditioner, causal_codec(tmp_path), config))
    assert model.codec.can_stream
    model.set_generation_params(duration=0.4, seed=1)
    chunks = list(model.generate_stream(num_samples=2, chunk_duration=0.02))
    assert len(chunks) == 20 and all(c.shape == (2, 1, HOP) for c in chunks)
    offline = model.generate_audio(model.last_codes)
    torch.testing.assert_close(torch.cat(chunks, dim=-1), offline, atol=1e-5, rtol=0)


def test_tokens_for_saving(musicgen, tmp_path):
    musicgen.set_generation_params(duration=0.2, seed=0)
    wav, codes = musicgen.generate(TEXTS, return_tokens=True)
    tokens = musicgen.to_tokens(codes, wav.shape[-1])
    assert isinstance(tokens, Tokens) and tokens.model_id == musicgen.codec.model_id
    loaded = Tokens.load(tokens.save(tmp_path / "t.npz"))
    torch.testing.assert_close(musicgen.codec.decode(loaded), wav, atol=1e-5, rtol=0)
    assert torch.equal(musicgen.last_tokens.codes, codes)


def test_melody_conditioning(tmp_path):
    model = MusicGen.get_pretrained(save_hf(tiny_musicgen(seed=3, melody=True), tmp_path / "m"),
                                    device="cpu")  # fmt: skip
    greedy(model, 0.3)
    melody = torch.sin(torch.arange(32000) * 2 * torch.pi * 440 / 32000)[None] * 0.5  # 1 s of A
    plain = model.generate(TEXTS, return_tokens=True)[1]
    with_melody = model.generate_with_chroma(TEXTS, melody[None].expand(2, 1, -1), 32000,
                                             return_tokens=True)[1]  # fmt: skip
    assert not torch.equal(plain, with_melody)
    # No melody is the null melody: the chroma of silence, bin 0 in every frame.
    none = model.generate_with_chroma(TEXTS, [None, None], 32000, return_tokens=True)[1]
    assert torch.equal(none, plain)
    # The chroma length is the checkpoint's (transformers' config.json: CHROMA_LENGTH here,
    # 235 for the published models), not one computed from a 30 s segment.
    null = model._melody.null(2)
    assert null.shape == (2, CHROMA_LENGTH, 12) and bool((null[..., 0] == 1).all())
    chroma = model._melody.chroma(model._melody.prepare([melody], 32000))
    assert bool((chroma.argmax(-1) == 9).all())  # A, tiled to CHROMA_LENGTH frames
    mixed = model.generate_with_chroma(TEXTS, [melody, None], 32000, return_tokens=True)[1]
    assert torch.equal(mixed[1:], none[1:]) and torch.equal(mixed[:1], with_melody[:1])
    # extended generation shifts the melody with the windows
    extended = MusicGen("tiny", load_lm(tmp_path / "m"), max_duration=0.3)
    extended.set_generation_params(use_sampling=False, duration=0.5, extend_stride=0.2)
    wav = extended.generate_with_chroma(TEXTS[:1], melody, 32000)
    assert wav.shape == (1, 1, 25 * HOP)


def test_stereo_interleaves_two_channels(tmp_path):
    model = MusicGen.get_pretrained(save_hf(tiny_musicgen(seed=5, channels=2), tmp_path / "s"),
                                    device="cpu")  # fmt: skip
    model.set_generation_params(duration=0.3, seed=0)
    wav, codes = model.generate(TEXTS[:1], return_tokens=True)
    assert model.audio_channels == 2 and wav.shape == (1, 2, 15 * HOP)
    assert codes.shape == (1, 2 * N_Q, 15)
    left = model.codec.decode(Tokens(codes[:, 0::2], None, 15 * HOP, 32000, 1.2,
                                     model.codec.model_id))  # fmt: skip
    torch.testing.assert_close(wav[:, :1], left, atol=1e-5, rtol=0)
    tokens = model.to_tokens(codes)
    assert tokens.codes.shape == (2, N_Q, 15) and torch.equal(tokens.codes[1], codes[0, 1::2])
    prompt = torch.randn(1, 2, 3200, generator=torch.Generator().manual_seed(1)) * 0.1
    cont = model.generate_continuation(prompt, 32000, return_tokens=True)[1]
    assert torch.equal(cont[:, 1::2, :5], model.codec.encode(prompt[:, 1:]).codes)
    chunks = list(model.generate_stream(["rock"], chunk_duration=0.1))
    torch.testing.assert_close(
        torch.cat(chunks, dim=-1), model.generate_audio(model.last_codes), atol=1e-5, rtol=0
    )


def test_progress_is_printed_with_progress_true(musicgen, capsys):
    musicgen.set_generation_params(duration=0.1, seed=0)
    musicgen.generate(TEXTS[:1], progress=True)
    assert "     8 /      8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.generate([]), "descriptions is empty"),
        (lambda m: m.generate("rock"), "not one string"),
        (lambda m: m.generate_unconditional(0), "num_samples must be a positive integer"),
        (lambda m: m.set_generation_params(duration=0), "duration must be positive"),
        (lambda m: m.set_generation_params(duration=-1.0), "duration must be positive"),
        (lambda m: m.set_generation_params(duration=40, extend_stride=30), "extend_stride"),
        (lambda m: m.set_generation_params(top_p=2.0), "top_p"),
        (lambda m: m.generate_with_chroma(["a"], torch.zeros(1, 100), 32000), "not conditioned"),
        (lambda m: m.generate_continuation(torch.zeros(1, 1, 320000), 32000), "prompt .* must"),
        (lambda m: m.generate_continuation(torch.zeros(5), 32000), "prompt must be audio"),
        (
            lambda m: (
                m.set_generation_params(duration=40),
                m.generate_continuation(torch.zeros(1, 1, 31 * 32000), 32000),
            ),
            "model's window \\(30 s\\)",
        ),
        (lambda m: m.generate_continuation(torch.zeros(1, 100), 0), "prompt_sample_rate"),
        (lambda m: m.generate_continuation(torch.zeros(2, 1, 100), 32000, ["a"]), "2 prompts"),
        (lambda m: m.generate_stream(), "give descriptions"),
        (lambda m: m.generate_stream(["a"], chunk_duration=0), "chunk_duration"),
        (
            lambda m: m.generate_stream(prompt=torch.zeros(1, 1, 32000), prompt_sample_rate=32000),
            "prompt",
        ),
        (lambda m: m.set_generation_params(duration="1"), "duration must be a number"),
        (lambda m: m.set_generation_params(top_k=None), "top_k must be an integer"),
        (lambda m: m.set_generation_params(cfg_coef=None), "cfg_coef must be a number"),
        (lambda m: m.set_generation_params(seed="x"), "seed must be an integer"),
        (lambda m: m.generate(None), "descriptions must be a list"),
    ],
)
def test_bad_input_is_one_clear_line(musicgen, call, message):
    musicgen.set_generation_params(duration=0.2)
    with pytest.raises(AudiotokError, match=message) as info:
        call(musicgen)
    assert "\n" not in str(info.value)


def test_bf16_lm_runs_and_mostly_agrees(dirs):
    model = greedy(MusicGen.get_pretrained(dirs["hf"], device="cpu"), 0.4)
    _, exact = model.generate(TEXTS, return_tokens=True)
    model.set_precision("bf16")
    assert model.precision == "bf16" and model.lm.dtype == torch.bfloat16
    wav, codes = model.generate(TEXTS, return_tokens=True)
    assert wav.dtype == torch.float32 and codes.shape == exact.shape
    assert (codes[..., :3] == exact[..., :3]).float().mean() > 0.5  # before any tipped step
    with pytest.raises(AudiotokError, match="load the model again for fp32"):
        model.set_precision("fp32")
    with pytest.raises(AudiotokError, match="fp16 needs a CUDA device"):
        model.set_precision("fp16")
    with pytest.raises(AudiotokError, match="precision must be one of"):
        model.set_precision("int2")


def test_generation_inputs_that_overflowed_are_refused_or_computed(musicgen):
    """A seed past 64 bits, guidance of 1e40 and a temperature of 1e-40 each ended in a torch
    traceback; an out-of-order delay list passed the config check."""
    from audiotok.generate.lm_config import LMConfig
    from audiotok.generate.sampling import sample_next_token

    with pytest.raises(AudiotokError, match=r"seed must be in \[-2\*\*63, 2\*\*64\)"):
        musicgen.set_generation_params(duration=0.2, seed=2**64)
    with pytest.raises(AudiotokError, match="cfg_coef: at most 1e"):
        musicgen.set_generation_params(duration=0.2, cfg_coef=1e40)
    with pytest.raises(AudiotokError, match="at most 3600 s in one generation"):
        musicgen.set_generation_params(duration=1e9)  # planned 55 million windows first
    from audiotok.cli.generate_commands import generate
    from audiotok.generate.inputs import MAX_GENERATION_SECONDS

    duration = next(p for p in generate.params if p.name == "duration")
    assert duration.type.max == MAX_GENERATION_SECONDS  # the CLI refuses it before loading
    logits = torch.tensor([[[3.0, 2.0, 1.0]]]) * 50
    token = sample_next_token(logits, use_sampling=True, temp=1e-40)
    assert token.item() == 0  # as greedy: all the mass on the largest logit
    with pytest.raises(ValueError, match="non-decreasing"):
        LMConfig(n_q=4, card=16, dim=16, num_heads=2, num_layers=1, delays=(3, 2, 1, 0))
