"""audiotok compress / decompress / info, on a tiny test-made checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import DATA, tiny_codec

from audiotok.audio import read_audio
from audiotok.cli.main import cli
from audiotok.codec.checkpoints import save_checkpoint
from audiotok.compression import decode_stream

SPEECH = DATA / "speech_24k.flac"
MUSIC = DATA / "music_48k_stereo.flac"


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    codec = tiny_codec()
    card = save_checkpoint(codec.model, tmp_path / "models" / "tiny.json", name="tiny")
    return str(card)


def run(*args: object, input: bytes | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiotok: error: "), result.stderr
    return lines[0]


def test_compress_decompress_round_trip(model, tmp_path):
    result = run("compress", SPEECH, tmp_path / "s.atok", "-m", model, "--meta", "title=fox")
    assert result.exit_code == 0, result.output
    assert "s.atok: 2.65 s, 1 codebooks at 0.3 kbps" in result.stderr
    result = run("decompress", tmp_path / "s.atok", tmp_path / "s.wav", "-m", model)
    assert result.exit_code == 0, result.output

    codec = tiny_codec()
    wav, rate = read_audio(SPEECH)
    expected = codec.decode(codec.encode(wav, sample_rate=rate))[0]
    written, written_rate = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    assert written_rate == 24_000 and written.shape == (wav.shape[1], 1)
    quantised = torch.clamp(torch.round(expected * 32768), -32768, 32767) / 32768
    assert torch.equal(torch.from_numpy(written.T), quantised)

    info = json.loads(run("info", tmp_path / "s.atok", "--json").stdout)
    assert info["metadata"] == {"title": "fox"} and info["problems"] == []
    assert info["model"] == "tiny" and info["packets"] == 3 and info["seek_index"] is True


def test_default_output_names_and_original_format(model, tmp_path):
    music = tmp_path / "music.flac"
    music.write_bytes(MUSIC.read_bytes())
    assert run("compress", music, "-m", model).exit_code == 0
    assert run("decompress", tmp_path / "music.atok", "-m", model).exit_code == 0
    data, rate = sf.read(tmp_path / "music.wav", always_2d=True)
    assert rate == 48_000 and data.shape == (120_000, 2), "the original rate and channels"
    assert (
        run("decompress", tmp_path / "music.atok", "n.wav", "-m", model, "--native").exit_code == 0
    )
    assert sf.info(tmp_path / "n.wav").samplerate == 24_000


def test_refuses_to_overwrite_without_force(model, tmp_path):
    out = tmp_path / "s.atok"
    out.write_bytes(b"precious")
    line = error_line(run("compress", SPEECH, out, "-m", model))
    assert "already exists; use --force" in line
    assert out.read_bytes() == b"precious"
    assert run("compress", SPEECH, out, "-m", model, "-f").exit_code == 0
    assert out.read_bytes()[:4] == b"ATOK"


def test_stdin_and_stdout(model, tmp_path):
    atok = subprocess.run(
        [sys.executable, "-m", "audiotok", "compress", "-", "-", "-m", model],
        input=SPEECH.read_bytes(), capture_output=True, check=True, cwd=tmp_path,
        env={**os.environ, "AUDIOTOK_OFFLINE": "1"},
    ).stdout  # fmt: skip
    assert atok[:4] == b"ATOK"
    wav = subprocess.run(
        [sys.executable, "-m", "audiotok", "decompress", "-", "-", "-m", model],
        input=atok, capture_output=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert wav[:4] == b"RIFF"
    (tmp_path / "piped.atok").write_bytes(atok)
    assert decode_stream(tmp_path / "piped.atok", tiny_codec()).audio.shape == (1, 63_599)


def test_directory_with_progress_and_a_failing_file(model, tmp_path):
    tree = tmp_path / "in" / "sub"
    tree.mkdir(parents=True)
    (tree / "a.flac").write_bytes(SPEECH.read_bytes())
    (tmp_path / "in" / "b.flac").write_bytes(MUSIC.read_bytes())
    (tmp_path / "in" / "bad.wav").write_bytes(b"not audio")
    result = run("compress", tmp_path / "in", "-o", tmp_path / "out", "-m", model)
    assert result.exit_code == 1
    assert (tmp_path / "out" / "sub" / "a.atok").exists() and (tmp_path / "out" / "b.atok").exists()
    assert "bad.wav: cannot read audio" in result.stderr
    assert "1 of 3 files failed" in result.stderr
    result = run("decompress", tmp_path / "out", "-o", tmp_path / "wav", "-m", model)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "wav").rglob("*.wav")) == ["a.wav", "b.wav"]


def test_truncated_file_decodes_with_a_warning(model, tmp_path):
    assert run("compress", SPEECH, tmp_path / "s.atok", "-m", model).exit_code == 0
    data = (tmp_path / "s.atok").read_bytes()
    (tmp_path / "cut.atok").write_bytes(data[: len(data) * 2 // 3])
    result = run("decompress", tmp_path / "cut.atok", "-m", model)
    assert result.exit_code == 0
    assert "audiotok: warning:" in result.stderr and "(truncated)" in result.stderr
    short = sf.info(tmp_path / "cut.wav").frames
    result = run("decompress", tmp_path / "cut.atok", "rec.wav", "-m", model, "--recover")
    assert sf.info(tmp_path / "rec.wav").frames == 63_599 > short
    info = run("info", tmp_path / "cut.atok")
    assert info.exit_code == 1 and "truncated" in info.stdout


def test_damaged_file_fails_in_one_line_unless_recovering(model, tmp_path):
    assert run("compress", SPEECH, tmp_path / "s.atok", "-m", model).exit_code == 0
    data = bytearray((tmp_path / "s.atok").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.atok").write_bytes(bytes(data))
    line = error_line(run("decompress", tmp_path / "bad.atok", "-m", model))
    assert "damaged" in line and "(at byte " in line
    assert not (tmp_path / "bad.wav").exists()
    result = run("decompress", tmp_path / "bad.atok", "-m", model, "--recover")
    assert result.exit_code == 0 and "concealed" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress", "missing.wav"], "missing.wav: no such file"),
        (["decompress", "missing.atok"], "missing.atok"),
        (["compress", str(SPEECH), "x.atok", "-b", "7"], "does not support 7 kbps"),
        (["compress", str(SPEECH), "x.atok", "--entropy", "lm"], "an .ecdc output"),
    ],
)
def test_bad_input_is_one_line(model, args, message):
    assert message in error_line(run(*args, "-m", model))


def test_garbage_compressed_file(model, tmp_path):
    (tmp_path / "g.atok").write_bytes(os.urandom(300))
    assert "not an .atok file" in error_line(run("decompress", tmp_path / "g.atok", "-m", model))
    assert "not an .atok file" in error_line(run("info", tmp_path / "g.atok"))


def test_usage_errors_exit_2(model):
    assert run("compress").exit_code == 2
    assert run("compress", SPEECH, "--entropy", "zip").exit_code == 2
    assert run("compress", SPEECH, "--meta", "novalue", "-m", model).exit_code == 2


def test_official_model_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = error_line(run("compress", SPEECH, tmp_path / "s.atok", "-m", "encodec_24khz"))
    assert "model encodec_24khz: weights not found locally" in line
    assert not Path(tmp_path / "s.atok").exists()
