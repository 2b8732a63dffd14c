"""The ``audiotok`` command line: round trips, refusals, and what a user sees when it fails.

Most commands run in-process with click's ``CliRunner``; the few properties of a real process
(what ``--help`` imports, what reaches stderr) are checked with ``python -m audiotok``. Models
are tiny audiotok checkpoints; every cache is under ``tmp_path`` and downloads are off.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import DATA, tiny_codec

import audiotok
from audiotok.audio.read import read_audio
from audiotok.cli.main import cli
from audiotok.codec.tokens import Tokens
from audiotok.runtime.files import sha256_file
from audiotok.zoo import codec_cards as registry
from audiotok.zoo import codec_checkpoints
from audiotok.zoo.codec_checkpoints import save_checkpoint
from audiotok.zoo.lm_cards import generation_card_names

SPEECH = DATA / "speech_24k.flac"
NAMES = ("encodec_24khz", "encodec_48khz", "encodec_32khz", "encodec_16khz")


# --- isolation and helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """Every cache under ``tmp_path``, downloads off, and no host name resolved."""
    root = tmp_path / "caches"
    paths = SimpleNamespace(audiotok=root / "audiotok", hf=root / "hf" / "hub")
    env = {
        "AUDIOTOK_CACHE": str(paths.audiotok),
        "XDG_CACHE_HOME": str(root / "xdg"),
        "TORCH_HOME": str(root / "torch"),
        "HF_HOME": str(root / "hf"),
        "HF_HUB_CACHE": str(paths.hf),
        "AUDIOTOK_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(paths.hf))

    def no_network(host, *args, **kwargs):
        raise AssertionError(f"a test tried to resolve {host!r}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.chdir(tmp_path)  # model ids are tried as paths relative to here
    return paths


@pytest.fixture
def tiny(tmp_path) -> SimpleNamespace:
    """A tiny codec and its audiotok checkpoint (card ``tiny.json``, model id ``tiny``)."""
    codec = tiny_codec()
    card = save_checkpoint(codec.model, tmp_path / "models" / "tiny.json", name="tiny")
    return SimpleNamespace(codec=codec, card=card)


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="audiotok")


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit status 1 and exactly one ``audiotok: error:`` line on stderr, nothing on stdout."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("audiotok: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def pcm16(wav: np.ndarray) -> np.ndarray:
    """What a 16-bit wav written with strategy ``clip`` holds."""
    return np.clip(np.round(np.clip(wav, -1, 1) * 32768), -32768, 32767).astype(np.int16)


def run_process(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m audiotok ARGS`` (or ``python -c CODE``) in this test's environment."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "audiotok"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )


# --- a real process ---------------------------------------------------------------------------

IMPORTS_OF = """\
import runpy, sys
sys.argv = ["audiotok", *sys.argv[1:]]
status = 0
try:
    runpy.run_module("audiotok", run_name="__main__")
except SystemExit as exc:
    status = exc.code
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize("args", [["--help"], ["encode", "--help"], ["models"]], ids=" ".join)
def test_help_and_models_do_not_import_torch(args):
    result = run_process(*args, code=IMPORTS_OF)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "torch imported: False"
    if args == ["--help"]:
        assert result.stdout.startswith("Usage: audiotok [OPTIONS] COMMAND [ARGS]...")
        for command in ("encode", "decode", "models"):
            assert f"\n  {command} " in result.stdout
    elif args == ["models"]:
        assert all(name in result.stdout for name in NAMES)


def test_error_in_a_real_process_is_one_line_without_traceback(tmp_path, tiny):
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"RIFF not really a wav" * 100)

    result = run_process("encode", str(garbage), "-m", str(tiny.card))

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"audiotok: error: {garbage}: cannot read audio: ")
    assert not garbage.with_suffix(".npz").exists()


def test_version():
    result = run("--version")

    assert result.exit_code == 0
    assert result.stdout == f"audiotok, version {audiotok.__version__}\n"


# --- encode and decode -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_encode_decode_round_trip(suffix, tmp_path, tiny):
    tokens_path = tmp_path / f"speech{suffix}"
    wav_path = tmp_path / "speech.wav"

    encoded = run("encode", SPEECH, "-o", tokens_path, "-m", tiny.card)

    assert encoded.exit_code == 0, encoded.output
    assert encoded.stderr.startswith(f"{tokens_path}: 1 codebooks x 199 frames, 0.3 kbps")
    assert encoded.stderr.rstrip().endswith("model tiny")
    tokens = Tokens.load(tokens_path)
    audio, rate = read_audio(SPEECH)
    expected = tiny.codec.encode(audio, sample_rate=rate)
    assert torch.equal(tokens.codes, expected.codes)
    assert tokens.codes.unique().numel() > 4, "degenerate codes make a weak test"
    assert (tokens.length, tokens.sample_rate, tokens.bandwidth, tokens.model_id) == (
        audio.shape[-1],
        24_000,
        0.3,
        "tiny",
    )

    decoded = run("decode", tokens_path, "-o", wav_path, "-m", tiny.card)

    assert decoded.exit_code == 0, decoded.output
    assert decoded.stderr == f"{wav_path}: 2.65 s, 24000 Hz, 1 ch\n"
    samples, rate = sf.read(wav_path, dtype="int16", always_2d=True)
    assert rate == 24_000
    reference = pcm16(tiny.codec.decode(tokens)[0].numpy())
    assert np.abs(reference).max() > 1000, "near-silent audio makes a weak test"
    np.testing.assert_array_equal(samples.T, reference)


def test_encode_output_defaults_to_input_with_npz(tmp_path, tiny):
    audio = tmp_path / "clip.flac"
    shutil.copyfile(SPEECH, audio)

    result = run("encode", audio, "-m", tiny.card, "-b", "0.6")

    assert result.exit_code == 0, result.output
    tokens = Tokens.load(tmp_path / "clip.npz")
    assert tokens.bandwidth == 0.6 and tokens.num_codebooks == 2


def test_decode_uses_the_model_named_in_the_tokens(tmp_path):
    # Tokens of a registry model: decode loads that model, not the CLI's default one.
    tokens_path = tmp_path / "music.npz"
    codes = torch.zeros(1, 4, 150, dtype=torch.long)
    Tokens(codes, torch.ones(1, 1), 48_000, 48_000, 3.0, "encodec_48khz").save(tokens_path)

    result = run("decode", tokens_path)

    assert_one_error_line(result, "model encodec_48khz: weights not found locally")
    assert not tokens_path.with_suffix(".wav").exists()


def test_decode_without_model_when_the_tokens_name_none_we_know(tmp_path, tiny):
    tokens_path = tmp_path / "speech.npz"
    assert run("encode", SPEECH, "-o", tokens_path, "-m", tiny.card).exit_code == 0

    result = run("decode", tokens_path)

    assert_one_error_line(
        result, f"{tokens_path} was made by model 'tiny', which is not in the registry"
    )


def test_decode_without_model_says_to_pass_one(tmp_path, tiny):
    tokens_path = tmp_path / "speech.npz"
    assert run("encode", SPEECH, "-o", tokens_path, "-m", tiny.card).exit_code == 0

    line = assert_one_error_line(run("decode", tokens_path))

    assert "-m" in line or "--model" in line


def test_decode_tokens_holding_several_signals(tmp_path, tiny):
    tokens_path = tmp_path / "batch.npz"
    tiny.codec.encode(torch.zeros(2, 1, 2400)).save(tokens_path)

    result = run("decode", tokens_path, "-m", tiny.card)

    assert_one_error_line(result, f"{tokens_path} holds 2 signals; decode it with the Python API")


def test_decode_tokens_of_another_model(tmp_path, tiny):
    tokens_path = tmp_path / "other.npz"
    Tokens(torch.zeros(1, 8, 75, dtype=torch.long), None, 24_000, 24_000, 6.0, "x").save(
        tokens_path
    )

    result = run("decode", tokens_path, "-m", tiny.card)

    assert_one_error_line(result, "tokens of 'x' have 8 codebooks; tiny has 2")
    assert not tokens_path.with_suffix(".wav").exists()


# --- existing outputs ------------------------------------------------------------------------


def test_encode_refuses_to_overwrite_without_force(tmp_path, tiny):
    out = tmp_path / "speech.npz"
    out.write_bytes(b"precious")

    refused = run("encode", SPEECH, "-o", out, "-m", tiny.card)

    line = assert_one_error_line(refused, f"{out}: already exists; use -f/--force to replace it")
    assert "overwrite=True" not in line
    assert out.read_bytes() == b"precious"

    forced = run("encode", SPEECH, "-o", out, "-m", tiny.card, "-f")

    assert forced.exit_code == 0, forced.output
    assert Tokens.load(out).model_id == "tiny"


def test_decode_refuses_to_overwrite_without_force(tmp_path, tiny):
    tokens_path = tmp_path / "speech.npz"
    out = tmp_path / "speech.wav"
    assert run("encode", SPEECH, "-o", tokens_path, "-m", tiny.card).exit_code == 0
    out.write_bytes(b"precious")

    refused = run("decode", tokens_path, "-m", tiny.card)

    assert_one_error_line(refused, f"{out}: already exists; use -f/--force to replace it")
    assert out.read_bytes() == b"precious"

    forced = run("decode", tokens_path, "-m", tiny.card, "--force")

    assert forced.exit_code == 0, forced.output
    assert sf.info(out).frames == Tokens.load(tokens_path).length


# --- bad input -------------------------------------------------------------------------------


def bad_input(kind: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The arguments of a failing command and fragments of its one error line."""
    out = tmp_path / "out.wav"
    if kind == "missing audio":
        missing = tmp_path / "nothing.wav"
        return ["encode", str(missing)], [f"{missing}: no such file"]
    if kind == "unreadable audio":
        noise = tmp_path / "noise.wav"
        noise.write_bytes(np.random.default_rng(0).bytes(4096))
        return ["encode", str(noise)], [f"{noise}: cannot read audio: "]
    if kind == "empty audio":
        empty = tmp_path / "empty.wav"
        sf.write(empty, np.zeros((0, 1), np.float32), 24_000)
        return ["encode", str(empty)], [f"{empty}: contains no audio samples"]
    if kind == "unsupported bandwidth":
        return ["encode", str(SPEECH), "-o", str(tmp_path / "t.npz"), "-b", "7"], [
            "tiny does not support 7 kbps; choose one of 0.3, 0.6"
        ]
    if kind == "garbage tokens":
        garbage = tmp_path / "garbage.npz"
        garbage.write_bytes(np.random.default_rng(0).bytes(4096))
        return ["decode", str(garbage), "-o", str(out)], [f"{garbage}: not a tokens file ("]
    if kind == "garbage safetensors tokens":
        garbage = tmp_path / "garbage.safetensors"
        garbage.write_bytes(b"\xff" * 4096)
        return ["decode", str(garbage), "-o", str(out)], [f"{garbage}: not a tokens file ("]
    if kind == "missing tokens":
        missing = tmp_path / "nothing.npz"
        return ["decode", str(missing), "-o", str(out)], [f"{missing}: no such tokens file"]
    if kind == "text file":
        text = tmp_path / "notes.txt"
        text.write_text("not tokens, just notes\n")
        return ["decode", str(text), "-o", str(out)], [
            f"{text}: not a tokens file (neither .npz nor .safetensors data)"
        ]
    if kind == "not a tokens file":
        other = tmp_path / "other.npz"
        np.savez(other, codes=np.zeros((1, 1, 1), np.int64))
        return ["decode", str(other), "-o", str(out)], [f"{other}: not a readable tokens file ("]
    raise AssertionError(kind)


BAD_INPUTS = [
    "missing audio",
    "unreadable audio",
    "empty audio",
    "unsupported bandwidth",
    "garbage tokens",
    "garbage safetensors tokens",
    "missing tokens",
    "text file",
    "not a tokens file",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_one_error_line(kind, tmp_path, tiny):
    args, fragments = bad_input(kind, tmp_path)

    result = run(*args, "-m", tiny.card)

    assert_one_error_line(result, *fragments)
    assert not (tmp_path / "out.wav").exists()
    assert not (tmp_path / "t.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_encode_into_a_missing_folder_fails_in_one_line(tmp_path, tiny):
    out = tmp_path / "no" / "such" / "speech.npz"

    result = run("encode", SPEECH, "-o", out, "-m", tiny.card)

    assert_one_error_line(result, f"{out}: directory {out.parent} does not exist")


def test_encode_into_a_missing_folder_names_the_output(tmp_path, tiny):
    out = tmp_path / "no" / "such" / "speech.npz"

    line = assert_one_error_line(run("encode", SPEECH, "-o", out, "-m", tiny.card))

    assert f".{out.name}." not in line


def test_decode_into_a_missing_folder(tmp_path, tiny):
    tokens_path = tmp_path / "speech.npz"
    out = tmp_path / "no" / "speech.wav"
    assert run("encode", SPEECH, "-o", tokens_path, "-m", tiny.card).exit_code == 0

    result = run("decode", tokens_path, "-o", out, "-m", tiny.card)

    assert_one_error_line(result, f"{out}: directory {out.parent} does not exist")


def test_checkpoint_with_a_model_path(tmp_path, tiny):
    result = run(
        "encode", SPEECH, "-o", tmp_path / "t.npz", "-m", tiny.card, "--checkpoint", tiny.card
    )

    assert_one_error_line(result, "(--checkpoint) goes with a registry model name, not with a path")


def test_checkpoint_of_the_wrong_architecture(tmp_path, tiny):
    result = run("encode", SPEECH, "-o", tmp_path / "t.npz", "--checkpoint", tiny.card)

    assert_one_error_line(result, f"{tiny.card}: weights don't fit audiotok_24khz (")


def test_unknown_device_is_one_error_line(tmp_path, tiny):
    result = run(
        "encode", SPEECH, "-o", tmp_path / "t.npz", "-m", tiny.card, "--device", "nonsense"
    )

    assert_one_error_line(result, "invalid device 'nonsense'")


def test_unavailable_cuda_is_one_error_line(tmp_path, tiny):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("encode", SPEECH, "-o", tmp_path / "t.npz", "-m", tiny.card, "--device", "cuda")

    assert_one_error_line(result, "device cuda: CUDA is not available")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", str(SPEECH), "--bogus"], "No such option"),
        (["encode"], "Missing argument 'INPUT'"),
        (["encode", str(SPEECH), "-o", "speech.txt"], "the tokens file must end in .npz or "),
        (["decode", "t.npz", "--strategy", "loud"], "Invalid value for '--strategy'"),
        (["transcode"], "No such command 'transcode'"),
    ],
    ids=["unknown-option", "missing-argument", "tokens-suffix", "bad-choice", "unknown-command"],
)
def test_usage_errors_exit_2(args, message):
    result = run(*args)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Usage: audiotok ")
    assert message in result.stderr
    assert all(arg in result.stderr for arg in ("--bogus", "transcode") if arg in args)
    assert not Path("speech.txt").exists()


# --- models ----------------------------------------------------------------------------------


def test_models_lists_the_registry(caches):
    result = run("models")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert names == [registry.DEFAULT_CODEC, *NAMES, *generation_card_names()]
    assert "    text-to-music, codec encodec_32khz, text encoder t5-base; licence: CC-BY-NC" in (
        result.stdout
    )
    for name in NAMES:
        assert f"    weights: not downloaded (audiotok models fetch {name})" in lines
    packaged = registry.PACKAGED_DIR / f"{registry.DEFAULT_CODEC}.json"
    assert lines[2] == f"    weights: {packaged}", "the default ships in the package"
    assert lines[4].startswith(
        "    24000 Hz, 1 ch, 75 frames/s, 1024 codes, kbps: 1.5, 3, 6, 12, 24; licence: CC-BY-NC"
    )
    assert result.stderr == ""
    assert not caches.audiotok.exists() or not any(caches.audiotok.iterdir())


def test_models_shows_cached_weights(caches, monkeypatch):
    cached = caches.audiotok / "encodec_24khz-d7cc33bc.th"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    card = registry.find_card("encodec_24khz")
    source = dataclasses.replace(card.sources[0], sha256=sha256_file(cached))
    new = tuple(
        dataclasses.replace(c, sources=(source,)) if c is card else c for c in registry.CARDS
    )
    monkeypatch.setattr(registry, "CARDS", new)
    monkeypatch.setattr(codec_checkpoints, "CARDS", new)

    result = run("models")

    assert result.exit_code == 0, result.output
    assert f"    weights: {cached}" in result.stdout.splitlines()
    assert result.stdout.count("not downloaded") == 3 + len(generation_card_names())


def test_models_with_a_damaged_cached_file(caches):
    cached = caches.audiotok / "encodec_24khz-d7cc33bc.th"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")

    result = run("models")

    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if "unusable" in ln)
    assert line.startswith(f"    weights: unusable: {cached}: SHA-256 ")
    assert "damaged" in line
    others = 3 + len(generation_card_names())
    assert result.stdout.count("not downloaded") == others, "the other models are still listed"


def test_models_fetch_unknown_name():
    result = run("models", "fetch", "nosuchmodel")

    known = ", ".join((registry.DEFAULT_CODEC, *NAMES, *generation_card_names()))
    assert_one_error_line(result, f"unknown model 'nosuchmodel'; known: {known}")


def test_models_fetch_a_generator_brings_its_text_encoder(caches, tmp_path):
    """An audiocraft export names its T5, which was fetched only at the first load: a machine
    prepared with `models fetch musicgen-small` then failed offline, wanting t5-base."""
    from test_loading import put_in_hf_cache

    export, t5 = tmp_path / "export", tmp_path / "t5"
    files = {
        export: ("state_dict.bin", "compression_state_dict.bin"),
        t5: ("config.json", "tokenizer.json", "model.safetensors"),
    }
    for folder, names in files.items():
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"{}")
    lm = put_in_hf_cache(caches.hf, "facebook/musicgen-small", export)
    result = run("models", "fetch", "musicgen-small")
    assert result.exit_code == 1 and result.stdout.startswith(f"musicgen-small: {lm}")
    error = result.stderr.strip()
    assert error.startswith("audiotok: error: text encoder t5-base: not found in the Hugging Fa")
    assert "`hf download t5-base config.json model.safetensors tokenizer.json" in error
    assert "\n" not in error
    listed = run("models").stdout.splitlines()
    at = listed.index(f"    weights: {lm / 'state_dict.bin'}")
    missing = "    text encoder t5-base: not downloaded (audiotok models fetch musicgen-small)"
    assert listed[at + 1] == missing
    encoder = put_in_hf_cache(caches.hf, "t5-base", t5)
    result = run("models", "fetch", "musicgen-small")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == f"musicgen-small's text encoder t5-base: {encoder}"
    assert f"    text encoder t5-base: {encoder}" in run("models").stdout.splitlines()


def test_models_fetch_offline(caches):
    result = run("models", "fetch", "encodec_24khz")

    line = assert_one_error_line(result, "model encodec_24khz: weights not found locally")
    assert str(caches.audiotok / "encodec_24khz-d7cc33bc.th") in line
    assert "downloads are off (AUDIOTOK_OFFLINE / HF_HUB_OFFLINE)" in line
    assert "`-m encodec_24khz --checkpoint PATH`" in line
    assert not caches.audiotok.exists() or not any(caches.audiotok.iterdir())
