"""``audiotok generate`` on a tiny random MusicGen saved in transformers' format."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from generate_reference import save_hf, tiny_musicgen

from audiotok.audio import write as write_module
from audiotok.cli.main import cli
from audiotok.codec.tokens import Tokens
from audiotok.compression.container.atok import read_tokens

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_hf(tiny_musicgen(seed=0), tmp_path_factory.mktemp("cli") / "hf")


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_generate_writes_audio_and_tokens(model_dir, tmp_path):
    out, npz = tmp_path / "a.wav", tmp_path / "a.npz"
    args = ("generate", "lo fi beat", "-m", model_dir, "-d", "0.4", "--seed", "7")
    first = run(*args, "-o", out, "--tokens", npz)
    assert first.exit_code == 0, first.output
    audio, rate = sf.read(out, always_2d=True)
    assert rate == 32_000 and audio.shape == (0.4 * 32_000, 1)
    assert "a.wav: 0.40 s, 1 ch, 32000 Hz, 20 frames of 4 codebooks" in first.stderr
    atok = tmp_path / "b.ATOK"  # suffixes in any case, as -o takes them
    again = run(*args, "-o", tmp_path / "b.wav", "--tokens", atok)
    assert again.exit_code == 0, again.output
    saved = Tokens.load(npz)
    assert saved.codes.shape == (1, 4, 20)
    assert torch.equal(read_tokens(atok).codes, saved.codes), "same seed, same tokens"
    other = run(*args[:-1], "8", "-o", tmp_path / "c.wav", "--tokens", tmp_path / "c.NPZ")
    assert other.exit_code == 0, other.output
    assert not torch.equal(Tokens.load(tmp_path / "c.NPZ").codes, saved.codes)


def test_loudness_soft_clips_as_audiocrafts_example(model_dir, tmp_path, monkeypatch):
    """audiocraft's example writes with ``loudness_compressor=True``: a tanh past full scale."""
    calls = []
    real = write_module.write_audio

    def spy(*args, **kwargs):
        calls.append((kwargs["strategy"], kwargs.get("loudness_compressor", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(write_module, "write_audio", spy)
    args = ("generate", "lo fi", "-m", model_dir, "-d", "0.2", "--seed", "1")
    assert run(*args, "-o", tmp_path / "a.wav").exit_code == 0
    assert run(*args, "--strategy", "peak", "-o", tmp_path / "b.wav").exit_code == 0
    assert calls == [("loudness", True), ("peak", False)]


def test_generate_continuation_and_unconditional(model_dir, tmp_path):
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, torch.randn(6400).numpy() * 0.1, 32_000)
    out = tmp_path / "cont.wav"
    result = run("generate", "piano", "-m", model_dir, "-d", "0.5", "--continue", prompt,
                 "-o", out, "--greedy")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sf.info(out).frames == 0.5 * 32_000
    result = run("generate", "-m", model_dir, "-d", "0.2", "-o", tmp_path / "u.wav",
                 "--precision", "bf16")  # fmt: skip
    assert result.exit_code == 0, result.output


def test_generate_refuses_to_overwrite_and_reports_bad_input(model_dir, tmp_path):
    out = tmp_path / "x.wav"
    out.write_bytes(b"precious")
    result = run("generate", "beat", "-m", model_dir, "-d", "0.2", "-o", out)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"audiotok: error: {out}: already exists; use -f/--force to replace it"
    ]
    assert out.read_bytes() == b"precious"
    missing = run("generate", "beat", "-m", tmp_path / "nope", "-o", tmp_path / "y.wav")
    assert missing.exit_code == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "unknown generation model" in missing.stderr
    tune = tmp_path / "tune.wav"
    sf.write(tune, torch.randn(3200).numpy() * 0.1, 32_000)
    melody = run("generate", "beat", "-m", model_dir, "--melody", tune, "-o", tmp_path / "z.wav")
    assert melody.exit_code == 1 and len(melody.stderr.strip().splitlines()) == 1
    assert "is not conditioned on a melody: use a musicgen-melody model" in melody.stderr
    bad = run("generate", "beat", "-m", model_dir, "--tokens", tmp_path / "t.txt")
    assert bad.exit_code == 2 and "--tokens must end in" in bad.stderr
    # Refused before the model loads: generating first would lose the audio.
    unknown = run("generate", "beat", "-m", tmp_path / "nope", "-o", tmp_path / "out.xyz")
    assert unknown.exit_code == 1 and "unknown audio format 'xyz'" in unknown.stderr
    for option, value, message in (
        ("--cfg", "nan", "is not a finite number"),
        ("--temperature", "nan", "is not a finite number"),
        ("-d", "inf", "not in the range 0<x<=3600"),
        ("-d", "1e9", "not in the range 0<x<=3600"),  # planned 55 million windows first
        ("--seed", str(2**64), "not in the range"),  # torch's manual_seed overflowed
    ):
        refused = run("generate", "beat", "-m", model_dir, option, value, "-o", tmp_path / "n.wav")
        assert refused.exit_code == 2 and message in refused.stderr, (option, value)


def test_stereo_tokens_go_to_npz_not_atok(tmp_path):
    stereo = save_hf(tiny_musicgen(seed=0, channels=2), tmp_path / "stereo")
    refused = run("generate", "beat", "-m", stereo, "--tokens", tmp_path / "s.atok",
                  "-o", tmp_path / "s.wav")  # fmt: skip
    assert refused.exit_code == 2 and "holds one mono codec stream" in refused.stderr
    assert not (tmp_path / "s.wav").exists()
    result = run("generate", "beat", "-m", stereo, "-d", "0.2", "--tokens", tmp_path / "s.npz",
                 "-o", tmp_path / "s.wav")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sf.info(tmp_path / "s.wav").channels == 2
    assert Tokens.load(tmp_path / "s.npz").codes.shape == (2, 4, 10), "left and right rows"


def test_registry_model_offline_is_one_line_saying_what_to_get(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = run("generate", "jazz", "-m", "musicgen-small", "-o", tmp_path / "x.wav")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("audiotok: error: model musicgen-small: weights not found locally")
    assert line.count("the Hugging Face cache (facebook/musicgen-small)") == 1
    assert "state_dict.bin, compression_state_dict.bin) and pass their directory" in line


def test_generate_from_an_audiocraft_export_with_a_local_t5(tmp_path):
    from generate_reference import save_audiocraft

    model = tiny_musicgen(seed=0)
    export, t5 = save_audiocraft(model, tmp_path / "export")
    result = run("generate", "dog", "-m", export, "--text-encoder", t5, "-d", "0.3",
                 "-o", tmp_path / "d.wav")  # fmt: skip
    assert result.exit_code == 0, result.output
