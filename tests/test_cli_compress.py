"""audiotok compress / decompress / info, on a tiny test-made checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import DATA, tiny_codec

from audiotok.audio.read import read_audio
from audiotok.cli.main import cli
from audiotok.compression.decode import decode_stream
from audiotok.zoo.codec_checkpoints import save_checkpoint

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


def test_long_files_stream_unless_exact(model, tmp_path, monkeypatch):
    """Beyond STREAM_SECONDS both commands stream (a "(streamed)" summary); --exact codes and
    decodes in one pass, exactly as the one-pass API does."""
    from audiotok.compression import files

    monkeypatch.setattr(files, "STREAM_SECONDS", 1.0)
    result = run("compress", SPEECH, tmp_path / "s.atok", "-m", model)
    assert result.exit_code == 0 and "(streamed)" in result.stderr, result.output
    result = run("compress", SPEECH, tmp_path / "e.atok", "-m", model, "--exact")
    assert result.exit_code == 0 and "(streamed)" not in result.stderr, result.output
    codec = tiny_codec()
    wav, rate = read_audio(SPEECH)
    exact = decode_stream(tmp_path / "e.atok", codec)
    assert torch.equal(exact.audio, codec.decode(codec.encode(wav, sample_rate=rate))[0])
    for flags, name in [((), "s.flac"), (("--exact",), "e.flac")]:
        result = run("decompress", tmp_path / "e.atok", tmp_path / name, "-m", model, *flags)
        assert result.exit_code == 0, result.output
    streamed, _ = sf.read(tmp_path / "s.flac", dtype="float32")
    whole, _ = sf.read(tmp_path / "e.flac", dtype="float32")
    assert streamed.shape == whole.shape and np.abs(streamed - whole).max() < 1e-4


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
    assert line == f"audiotok: error: {out}: already exists; use -f/--force to replace it"
    assert out.read_bytes() == b"precious"
    assert run("compress", SPEECH, out, "-m", model, "-f").exit_code == 0
    assert out.read_bytes()[:4] == b"ATOK"
    wav = tmp_path / "s.wav"
    wav.write_bytes(b"precious")
    line = error_line(run("decompress", out, wav, "-m", model))
    assert line == f"audiotok: error: {wav}: already exists; use -f/--force to replace it"
    assert wav.read_bytes() == b"precious"


def test_python_api_names_overwrite_not_the_cli_flag(model, tmp_path):
    from audiotok.compression.files import compress_file
    from audiotok.errors import AudiotokError

    (tmp_path / "s.atok").write_bytes(b"precious")
    with pytest.raises(AudiotokError) as info:
        compress_file(SPEECH, tmp_path / "s.atok", tiny_codec())
    assert (
        str(info.value)
        == f"{tmp_path / 's.atok'}: already exists; pass overwrite=True to replace it"
    )


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


def test_directory_with_a_line_per_file_and_a_failing_file(model, tmp_path):
    tree = tmp_path / "in" / "sub"
    tree.mkdir(parents=True)
    (tree / "a.flac").write_bytes(SPEECH.read_bytes())
    (tmp_path / "in" / "b.flac").write_bytes(MUSIC.read_bytes())
    (tmp_path / "in" / "bad.wav").write_bytes(b"not audio")
    result = run("compress", tmp_path / "in", "-o", tmp_path / "out", "-m", model)
    assert result.exit_code == 1
    assert (tmp_path / "out" / "sub" / "a.atok").exists() and (tmp_path / "out" / "b.atok").exists()
    lines = [line for line in result.stderr.splitlines() if "stereo coded as mono" not in line]
    assert len(lines) == 4 and "\r" not in result.stderr, "stderr is no terminal: no bar"
    assert lines[0].startswith(f"{tmp_path / 'out' / 'b.atok'}: 2.50 s, ")
    assert lines[1].startswith(f"audiotok: error: {tmp_path / 'in' / 'bad.wav'}: cannot read audio")
    assert lines[2].startswith(f"{tmp_path / 'out' / 'sub' / 'a.atok'}: 2.65 s, ")
    assert lines[3] == "audiotok: error: 1 of 3 files failed"
    result = run("decompress", tmp_path / "out", "-o", tmp_path / "wav", "-m", model)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "wav").rglob("*.wav")) == ["a.wav", "b.wav"]
    assert len(result.stderr.splitlines()) == 2


def test_what_is_no_output_is_refused_before_any_work(model, tmp_path):
    talk = tmp_path / "talk.flac"
    talk.write_bytes(SPEECH.read_bytes())
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.flac").write_bytes(SPEECH.read_bytes())
    line = error_line(run("compress", talk, folder, "-m", model))  # meant -o out
    assert f"{folder}: a directory; name an output file (.atok, .ecdc) or write into" in line
    assert "not a file" in error_line(run("compress", talk, "talk.atk", "-m", model))  # a typo
    assert "already names the output" in error_line(run("compress", talk, "t.atok", "-o", folder))
    dup = tmp_path / "dup"
    dup.mkdir()
    for name in ("a.wav", "a.flac"):  # one output for two inputs: -f would keep the last
        sf.write(dup / name, np.zeros(2400, np.float32), 24_000)
    line = error_line(run("compress", dup, "-o", tmp_path / "dupout", "-m", model, "-f"))
    assert f"{tmp_path / 'dupout' / 'a.atok'} would be written from both" in line
    (tmp_path / "empty").mkdir()
    assert "no files to process" in error_line(run("compress", tmp_path / "empty", "-m", model))
    assert not list(tmp_path.rglob("*.atok")) and not (tmp_path / "dupout").exists()


def test_names_near_the_file_systems_limit(model, tmp_path):
    target = tmp_path / ("y" * 248 + ".atok")  # 253 bytes: the temporary name must be shorter
    assert run("compress", SPEECH, target, "-m", model).exit_code == 0
    assert run("decompress", target, "--strategy", "peak", "-m", model).exit_code == 0
    written = sorted(p.name for p in tmp_path.glob("y*"))  # no temporary file left
    assert written == [target.name, "y" * 248 + ".wav"]


def test_stereo_into_a_mono_model_says_so_in_one_line(model, tmp_path):
    result = run("compress", MUSIC, tmp_path / "m.atok", "-m", model)
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"audiotok: warning: {MUSIC}: stereo coded as mono by tiny")


def test_progress_bar_only_on_a_terminal(model, tmp_path, monkeypatch):
    from audiotok.cli import compress_commands

    for name in ("a", "b"):
        (tmp_path / f"{name}.flac").write_bytes(SPEECH.read_bytes())
    monkeypatch.setattr(compress_commands, "stderr_is_terminal", lambda: True)
    result = run("compress", tmp_path / "a.flac", tmp_path / "b.flac", "-m", model)
    assert result.exit_code == 0, result.output
    assert "2/2" in result.stderr and "file/s" in result.stderr


def test_truncated_file_fails_in_one_line_unless_recovering(model, tmp_path):
    assert run("compress", SPEECH, tmp_path / "s.atok", "-m", model).exit_code == 0
    data = (tmp_path / "s.atok").read_bytes()
    cut = tmp_path / "cut.atok"
    cut.write_bytes(data[: len(data) * 2 // 3])
    before = sorted(tmp_path.iterdir())
    line = error_line(run("decompress", cut, "-m", model))
    assert line.startswith(f"audiotok: error: {cut}: truncated: 0.65 s of 2.65 s missing (at byte ")
    assert line.endswith("; --recover decodes what is there") and "recover=True" not in line
    assert sorted(tmp_path.iterdir()) == before, "no output, no temporary file"
    result = run("decompress", cut, "rec.wav", "-m", model, "--recover")
    assert result.exit_code == 0, result.output
    assert f"audiotok: warning: {cut}: truncated: the data after byte " in result.stderr
    assert "is incomplete or missing: 0.65 s lost in all" in result.stderr
    assert sf.info(tmp_path / "rec.wav").frames == 63_599
    info = run("info", cut)
    assert info.exit_code == 1 and "truncated" in info.stdout


def test_damaged_file_fails_in_one_line_unless_recovering(model, tmp_path):
    assert run("compress", SPEECH, tmp_path / "s.atok", "-m", model).exit_code == 0
    data = bytearray((tmp_path / "s.atok").read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.atok"
    bad.write_bytes(bytes(data))
    before = sorted(tmp_path.iterdir())
    line = error_line(run("decompress", bad, "-m", model))
    assert line.startswith(f"audiotok: error: {bad}: damaged") and "(at byte " in line
    assert line.endswith("; --recover conceals the damage")
    assert sorted(tmp_path.iterdir()) == before, "no output, no temporary file"
    result = run("decompress", bad, "-m", model, "--recover")
    assert result.exit_code == 0 and "1.00 s concealed" in result.stderr
    report = run("info", "--json", bad)
    assert report.exit_code == 1 and json.loads(report.stdout)["problems"]


def test_data_after_the_end_is_an_error_not_a_silent_loss(model, tmp_path):
    assert run("compress", SPEECH, tmp_path / "s.atok", "-m", model).exit_code == 0
    one = (tmp_path / "s.atok").read_bytes()
    both = tmp_path / "both.atok"
    both.write_bytes(one + one)  # cat s.atok s.atok: the second would be dropped unnoticed
    line = error_line(run("decompress", both, "-m", model))
    assert f"data after the end of the stream (a file appended?) (at byte {len(one)})" in line
    result = run("decompress", both, "-m", model, "--recover")
    assert result.exit_code == 0 and f"from byte {len(one)}, ignored" in result.stderr
    report = run("info", both)
    assert report.exit_code == 1 and "data after the end of the stream" in report.stdout


def test_damage_in_a_batch_fails_that_file_only(model, tmp_path):
    (tmp_path / "in").mkdir()
    assert run("compress", SPEECH, tmp_path / "in" / "a.atok", "-m", model).exit_code == 0
    data = (tmp_path / "in" / "a.atok").read_bytes()
    (tmp_path / "in" / "b.atok").write_bytes(data[: len(data) // 2])
    result = run("decompress", tmp_path / "in", "-o", tmp_path / "out", "-m", model)
    assert result.exit_code == 1
    assert f"audiotok: error: {tmp_path / 'in' / 'b.atok'}: truncated: " in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav"]


# Run in a real process, with a hook that stops while the output's temporary file is open:
# the signal then lands mid-write, every time, however fast the machine.
STOP_MID_WRITE = """
import time

import soundfile

from audiotok.cli.main import main
from audiotok.compression.container.writer import AtokWriter


def block(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(120)


AtokWriter.write_tokens = block  # compress
soundfile.SoundFile.write = block  # decompress
main()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGHUP, and SIGTERM kills at once")
@pytest.mark.parametrize(
    ("command", "name", "status"),
    [("compress", "SIGTERM", 143), ("compress", "SIGHUP", 129), ("decompress", "SIGTERM", 143)],
)
def test_sigterm_and_sighup_remove_the_partial_output(model, tmp_path, command, name, status):
    signum = getattr(signal, name)
    if command == "compress":
        args = [SPEECH, tmp_path / "out.atok"]
    else:
        assert run("compress", SPEECH, tmp_path / "s.atok", "-m", model).exit_code == 0
        args = [tmp_path / "s.atok", tmp_path / "out.wav"]
    before = sorted(tmp_path.iterdir())
    proc = subprocess.Popen(
        [sys.executable, "-c", STOP_MID_WRITE, command, *map(str, args), "-m", model],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    watchdog = threading.Timer(120, proc.kill)  # a hang fails the test, not the whole run
    watchdog.start()
    try:
        assert proc.stdout.readline() == b"writing\n", proc.stderr.read().decode()
        assert len(list(tmp_path.glob(".out.*.tmp"))) == 1, "the signal lands mid-write"
        proc.send_signal(signum)
        _, stderr = proc.communicate()
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    assert proc.returncode == status, stderr.decode()
    assert stderr.decode().strip().splitlines() == [f"audiotok: stopped by {name}"]
    assert sorted(tmp_path.iterdir()) == before, "no output, no temporary file"


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
    garbage = tmp_path / "g.atok"
    garbage.write_bytes(os.urandom(300))
    expected = f"audiotok: error: {garbage}: not an .atok file"
    assert error_line(run("decompress", garbage, "-m", model)).startswith(expected)
    assert error_line(run("info", garbage)).startswith(expected)


def test_info_on_a_missing_file_is_one_line(model, tmp_path):
    assert error_line(run("info", "missing.atok")) == "audiotok: error: missing.atok: no such file"


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
