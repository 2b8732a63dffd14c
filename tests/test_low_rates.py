"""Audio declared at rates below MIN_SAMPLE_RATE is refused before anything is resampled."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import tiny_codec

from audiotok.audio import read as audio_read
from audiotok.audio.blocks import AudioBlocks, audio_info
from audiotok.audio.read import convert_audio, read_audio
from audiotok.cli.main import cli
from audiotok.codec import config
from audiotok.errors import AudioError
from audiotok.zoo.codec_checkpoints import save_checkpoint


def wav_at(path, rate: int, samples: int = 2000):
    sf.write(path, np.full((samples, 1), 0.1, np.float32), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize("rate", [1, 100, 999])
def test_files_below_the_minimum_rate_are_refused(tmp_path, rate):
    # At 1 Hz, 2000 samples (4 KB) stood for 33 minutes: the streaming encoder's soxr
    # buffered 3.2 GB and died in torch's allocator (over HTTP, a 500 after 20 s).
    path = wav_at(tmp_path / "low.wav", rate)
    message = f"sample rate {rate} Hz is below 1000 Hz"
    for read in (audio_info, read_audio, lambda p: AudioBlocks(p, 24_000, 1)):
        with pytest.raises(AudioError, match=message):
            read(path)
    with open(path, "rb") as f, pytest.raises(AudioError, match=message):
        read_audio(f)
    assert read_audio(wav_at(tmp_path / "ok.wav", 1000))[1] == 1000


def test_arrays_are_not_resampled_from_or_to_such_rates():
    x = np.zeros((1, 10), np.float32)
    for rates in ((1, 24_000), (24_000, 100)):
        with pytest.raises(AudioError, match="is below 1000 Hz, the lowest audiotok reads"):
            convert_audio(x, *rates, 1)
    assert convert_audio(x, 100, 100, 1) is x  # nothing to resample
    # No codec may run at a rate its own files could not be read back at.
    assert config.MIN_SAMPLE_RATE == audio_read.MIN_SAMPLE_RATE


def test_compress_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    card = save_checkpoint(tiny_codec().model, tmp_path / "tiny.json", name="tiny")
    source = wav_at(tmp_path / "rate100.wav", 100)
    args = ["compress", str(source), str(tmp_path / "o.atok"), "-m", str(card)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"audiotok: error: {source}: sample rate 100 Hz is below 1000 Hz, the lowest audiotok "
        "reads or resamples"
    )
    assert not (tmp_path / "o.atok").exists()
