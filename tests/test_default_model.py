"""The codec that ships in the package: its card, offline use, and the CLI's default."""

from __future__ import annotations

import itertools
import json

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import DATA

import audiotok
from audiotok.audio.read import convert_audio, read_audio
from audiotok.cli.main import cli
from audiotok.runtime.files import sha256_file
from audiotok.train.config import DataConfig
from audiotok.zoo.codec_cards import DEFAULT_CODEC, PACKAGED_DIR, find_card

CARD = PACKAGED_DIR / f"{DEFAULT_CODEC}.json"
SPEECH = DATA / "speech_24k.flac"


def offline(monkeypatch, tmp_path) -> None:
    """No downloads and empty caches: only the package itself can provide weights."""
    for variable in ("AUDIOTOK_CACHE", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(variable, str(tmp_path / "empty-cache"))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_card_states_layout_size_provenance_and_checksum():
    card = json.loads(CARD.read_text())
    config = card["config"]
    assert (config["sample_rate"], config["channels"], config["causal"]) == (24_000, 1, True)
    assert (config["n_q"], config["bins"], config["ratios"]) == (32, 1024, [8, 5, 4, 2])
    assert config["target_bandwidths"] == [1.5, 3.0, 6.0, 12.0, 24.0]
    weights = PACKAGED_DIR / card["weights"]
    assert weights.stat().st_size + CARD.stat().st_size <= 20 * 1024 * 1024
    assert sha256_file(weights) == card["sha256"]
    held_out = set(DataConfig().validation_sources)
    assert card["training_data"] and not held_out & set(card["training_data"])
    assert card["training"]["steps"] > 0 and card["licence"]


def test_loads_offline_with_priors(monkeypatch, tmp_path):
    offline(monkeypatch, tmp_path)
    codec = audiotok.load_codec()  # no name: the default
    assert codec.model_id == DEFAULT_CODEC == find_card(DEFAULT_CODEC).name
    assert (codec.sample_rate, codec.frame_rate, codec.cardinality) == (24_000, 75.0, 1024)
    assert codec.entropy_priors.shape == (32, 1024)
    assert codec.can_stream


@pytest.mark.parametrize("clip", [SPEECH, DATA / "music_48k_stereo.flac"], ids=lambda p: p.stem)
def test_reconstructs_the_waveform_better_at_every_bitrate(monkeypatch, tmp_path, clip):
    """A trained codec keeps the waveform, not only the spectral envelope: SI-SDR is positive
    at 6 kbps, and each bitrate step decodes closer to the input (SI-SDR up, mel distance
    down). The codec shipped before this test existed kept the envelope and gave -32 dB at
    every bitrate, and passed a spectrum-only test."""
    from audiotok.train.losses import mel_distance, si_sdr

    offline(monkeypatch, tmp_path)
    codec = audiotok.load_codec()
    wav, rate = read_audio(clip)
    x = torch.from_numpy(convert_audio(wav, rate, codec.sample_rate, 1))[None]
    sdr, mel = [], []
    with torch.inference_mode():
        for bandwidth in codec.bandwidths:
            out = codec.decode(codec.encode(x, sample_rate=codec.sample_rate, bandwidth=bandwidth))
            sdr.append(float(si_sdr(out, x)))
            mel.append(float(mel_distance(out, x, codec.sample_rate)))
    assert sdr[codec.bandwidths.index(6.0)] > 0, sdr
    assert all(b > a for a, b in itertools.pairwise(sdr)), sdr
    assert all(b < a for a, b in itertools.pairwise(mel)), mel


def test_cli_compress_and_decompress_without_a_model_name(monkeypatch, tmp_path):
    offline(monkeypatch, tmp_path)
    run = CliRunner().invoke
    result = run(cli, ["compress", str(SPEECH), str(tmp_path / "s.atok")])
    assert result.exit_code == 0, result.output
    result = run(cli, ["decompress", str(tmp_path / "s.atok"), str(tmp_path / "s.wav")])
    assert result.exit_code == 0, result.output
    codec = audiotok.load_codec()
    wav, rate = read_audio(SPEECH)
    with torch.inference_mode():
        expected = codec.decode(codec.encode(wav, sample_rate=rate))[0]
    written, written_rate = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    assert written_rate == rate
    quantised = torch.clamp(torch.round(expected * 32768), -32768, 32767) / 32768
    assert torch.equal(torch.from_numpy(written.T), quantised)
    info = json.loads(run(cli, ["info", str(tmp_path / "s.atok"), "--json"]).stdout)
    assert info["model"] == DEFAULT_CODEC and info["problems"] == []
