"""Compression's channel policy: audio a model can't give back is refused unless downmixed.

A mono model decompresses to mono or stereo (the channel duplicated) and a stereo one to
stereo or mono, but neither can give back 3 or more channels: compressing such audio is an
error unless asked to downmix, and a downmix decompresses as what was coded. Files written
before the policy (8 channels coded as mono) decode only with ``native``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import tiny_codec

from audiotok.cli.main import cli
from audiotok.compression import files
from audiotok.compression.container.reader import AtokReader
from audiotok.compression.container.writer import AtokWriter
from audiotok.compression.decode import decompress
from audiotok.compression.encode import compress
from audiotok.compression.files import compress_file, decompress_file
from audiotok.errors import AudioError
from audiotok.zoo.codec_checkpoints import save_checkpoint


def noise(channels: int, samples: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed)) * 0.1


def original_channels(data: bytes | object) -> int:
    with AtokReader(data) as reader:
        return reader.header.original_channels


def old_file(codec, wav: torch.Tensor) -> bytes:
    """What compress wrote before the policy: the original's channels, whatever the model's."""
    buffer = io.BytesIO()
    tokens = codec.encode(wav, sample_rate=codec.sample_rate)
    with AtokWriter.for_codec(
        buffer, codec, bandwidth=tokens.bandwidth, length=tokens.length,
        original_sample_rate=codec.sample_rate, original_channels=wav.shape[0],
        original_length=wav.shape[1],
    ) as writer:  # fmt: skip
        writer.write_tokens(tokens)
    return buffer.getvalue()


@pytest.mark.parametrize("channels", [3, 8])
def test_mono_model_refuses_more_than_two_channels(codec, channels):
    with pytest.raises(AudioError) as info:
        compress(codec, noise(channels, 4000), 24_000)
    message = str(info.value)
    assert message == (
        f"{channels} channels, but tiny codes mono, which can't give {channels} back; "
        "pass downmix=True to code their average (decompressed as mono)"
    )
    assert info.value.cli_message == message.replace("pass downmix=True", "use --downmix")


def test_stereo_model_refuses_more_than_two_channels(segmented_codec):
    with pytest.raises(AudioError, match=r"^6 channels, but tiny48 codes stereo, .*"
                       r"downmix=True to code the first two, front left and right "
                       r"\(decompressed as stereo\)$"):  # fmt: skip
        compress(segmented_codec, noise(6, 9000), 48_000)


def test_downmix_decompresses_as_what_was_coded(codec, segmented_codec):
    x = noise(8, 24_000 + 17)
    data = compress(codec, x, 24_000, downmix=True)
    assert original_channels(data) == 1
    audio, rate = decompress(data, codec)
    expected = codec.decode(codec.encode(x.mean(0, keepdim=True)))[0]
    assert rate == 24_000 and torch.equal(audio, expected)
    # at another rate too: the header keeps the original rate and length
    audio, rate = decompress(compress(codec, x, 44_100, downmix=True), codec)
    assert rate == 44_100 and audio.shape == (1, 24_017)
    # a stereo model codes the front left and right
    x = noise(6, 9000)
    data = compress(segmented_codec, x, 48_000, downmix=True)
    assert original_channels(data) == 2
    audio, _ = decompress(data, segmented_codec)
    assert torch.equal(audio, segmented_codec.decode(segmented_codec.encode(x[:2]))[0])


def test_one_and_two_channels_still_round_trip_without_downmix(codec, segmented_codec):
    """Mono and stereo come back in their layout; downmix changes only what has more
    channels than the model."""
    for c, channels, expected in [(codec, 2, 2), (segmented_codec, 1, 1)]:
        x = noise(channels, c.sample_rate // 4)
        assert original_channels(compress(c, x, c.sample_rate)) == expected
        audio, _ = decompress(compress(c, x, c.sample_rate), c)
        assert audio.shape == x.shape
    assert original_channels(compress(codec, noise(2, 6000), 24_000, downmix=True)) == 1
    assert original_channels(compress(segmented_codec, noise(1, 6000), 48_000, downmix=True)) == 1


def test_old_files_suggest_native(codec):
    data = old_file(codec, noise(8, 4000))
    with pytest.raises(AudioError) as info:
        decompress(data, codec)
    assert str(info.value) == (
        "the original had 8 channels, coded as mono, which can't give 8 back; "
        "pass native=True to decode the mono audio that was coded"
    )
    assert "use --native to decode" in info.value.cli_message
    audio, rate = decompress(data, codec, native=True)
    assert audio.shape == (1, 4000) and rate == 24_000


def test_long_files_follow_the_policy(tmp_path, monkeypatch, codec):
    """Files long enough to stream: refused before anything is written; a downmix streams,
    records mono and decodes as a stream, as mono; a native decode streams too."""
    monkeypatch.setattr(files, "STREAM_SECONDS", 0.1)
    path = tmp_path / "six.wav"
    sf.write(path, noise(6, 12_000).numpy().T, 24_000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"six\.wav: 6 channels, but tiny codes mono"):
        compress_file(path, tmp_path / "six.atok", codec)
    assert not (tmp_path / "six.atok").exists()
    tokens = compress_file(path, tmp_path / "six.atok", codec, downmix=True)
    assert tokens is None and original_channels(tmp_path / "six.atok") == 1
    assert decompress_file(tmp_path / "six.atok", tmp_path / "back.wav", codec) is None
    info = sf.info(tmp_path / "back.wav")
    assert (info.channels, info.frames) == (1, 12_000)

    (tmp_path / "old.atok").write_bytes(old_file(codec, noise(6, 12_000)))
    with pytest.raises(AudioError, match=r"old\.atok: the original had 6 .* native=True"):
        decompress_file(tmp_path / "old.atok", tmp_path / "old.wav", codec)
    assert not (tmp_path / "old.wav").exists()
    result = decompress_file(tmp_path / "old.atok", tmp_path / "old.wav", codec, native=True)
    assert result is None and sf.info(tmp_path / "old.wav").channels == 1
    whole = decompress_file(tmp_path / "old.atok", tmp_path / "o1.wav", codec, native=True,
                            exact=True)  # fmt: skip
    assert whole is not None and whole.audio.shape == (1, 12_000)
    streamed, _ = sf.read(tmp_path / "old.wav", dtype="float32", always_2d=True)
    np.testing.assert_allclose(streamed.T, whole.audio.clamp(-1, 1).numpy(), atol=1e-4)


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return str(save_checkpoint(tiny_codec().model, tmp_path / "tiny.json", name="tiny"))


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiotok: error: "), result.stderr
    return lines[0].removeprefix("audiotok: error: ")


def test_cli_refuses_and_downmixes(model, tmp_path):
    x = noise(8, 24_000)
    sf.write(tmp_path / "eight.wav", x.numpy().T, 24_000, subtype="FLOAT")
    line = error_line(run("compress", "eight.wav", "-m", model))
    assert line == (
        "eight.wav: 8 channels, but tiny codes mono, which can't give 8 back; "
        "use --downmix to code their average (decompressed as mono)"
    )
    assert not (tmp_path / "eight.atok").exists()
    assert "use --downmix" in error_line(run("compress", "eight.wav", "e.ecdc", "-m", model))
    assert not (tmp_path / "e.ecdc").exists()

    assert run("compress", "eight.wav", "-m", model, "--downmix").exit_code == 0
    assert run("decompress", "eight.atok", "back.wav", "-m", model).exit_code == 0
    back, rate = sf.read(tmp_path / "back.wav", dtype="float32", always_2d=True)
    codec = tiny_codec()
    expected = codec.decode(codec.encode(x.mean(0, keepdim=True)))[0]
    assert rate == 24_000 and back.shape == (24_000, 1)
    assert np.abs(back[:, 0] - expected[0].numpy()).max() < 1e-4  # 16-bit steps


def test_cli_old_file_suggests_native(model, tmp_path):
    (tmp_path / "old.atok").write_bytes(old_file(tiny_codec(), noise(3, 4000)))
    line = error_line(run("decompress", "old.atok", "-m", model))
    assert line == (
        "old.atok: the original had 3 channels, coded as mono, which can't give 3 back; "
        "use --native to decode the mono audio that was coded"
    )
    assert not (tmp_path / "old.wav").exists()
    assert run("decompress", "old.atok", "-m", model, "--native").exit_code == 0
    assert sf.info(tmp_path / "old.wav").channels == 1
