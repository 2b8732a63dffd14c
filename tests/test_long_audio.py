"""Long files: compressed and decompressed as streams, block by block, in bounded memory."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_codec

from audiotok import compression
from audiotok.errors import FormatError, TruncatedError
from audiotok.formats.atok import read_tokens


@pytest.fixture
def long_file(tmp_path, monkeypatch):
    """A 3 s stereo 44.1 kHz file, with 'long' meaning more than 1 s for this test."""
    monkeypatch.setattr(compression, "STREAM_SECONDS", 1.0)
    rng = np.random.default_rng(0)
    t = np.arange(3 * 44_100) / 44_100
    wav = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
    wav += 0.01 * rng.standard_normal(wav.shape)
    path = tmp_path / "long.wav"
    sf.write(path, wav.T.astype(np.float32), 44_100, subtype="FLOAT")
    return path


def forbid_whole_file_io(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a long file must not be read or decoded whole")

    monkeypatch.setattr(compression, "read_audio", refuse)
    monkeypatch.setattr(compression, "decode_stream", refuse)


def test_long_file_round_trip_streams_and_matches_offline(long_file, tmp_path, monkeypatch):
    codec = tiny_codec()
    offline_atok = tmp_path / "offline.atok"
    tokens = compression.compress_file(long_file, offline_atok, codec)  # read whole (shorter path)
    assert tokens is None, "3 s counts as long here: streamed"
    monkeypatch.setattr(compression, "STREAM_SECONDS", 1e9)
    compression.compress_file(long_file, tmp_path / "whole.atok", codec)
    streamed, whole = read_tokens(offline_atok), read_tokens(tmp_path / "whole.atok")
    assert streamed.length == whole.length
    agree = (streamed.codes == whole.codes).float().mean().item()
    assert agree > 0.99, f"streamed codes agree with offline ones ({agree:.4f})"

    monkeypatch.setattr(compression, "STREAM_SECONDS", 1.0)
    forbid_whole_file_io(monkeypatch)
    assert compression.decompress_file(offline_atok, tmp_path / "s.wav", codec) is None
    monkeypatch.undo()
    result = compression.decompress_file(offline_atok, tmp_path / "o.wav", codec)
    streamed_audio, rate = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    offline_audio, _ = sf.read(tmp_path / "o.wav", dtype="float32", always_2d=True)
    assert rate == 44_100 and streamed_audio.shape == offline_audio.shape == (3 * 44_100, 2)
    assert result.audio.shape == (2, 3 * 44_100)
    # Same codes, decoders within 1e-5, resampled as a stream or whole: a few 16-bit steps.
    assert np.abs(streamed_audio - offline_audio).max() < 5e-3


def test_streamed_compression_reads_block_by_block(long_file, tmp_path, monkeypatch):
    codec = tiny_codec()
    forbid_whole_file_io(monkeypatch)
    assert compression.compress_file(long_file, tmp_path / "x.atok", codec) is None
    tokens = read_tokens(tmp_path / "x.atok")
    assert tokens.length == round(3 * 44_100 * 24_000 / 44_100)
    assert tokens.num_frames == codec.num_frames(tokens.length)


def test_segmented_codecs_stream_by_segment(tmp_path, monkeypatch, segmented_codec):
    # At the model's rate (no resampling), streamed and whole-file paths see the same samples.
    monkeypatch.setattr(compression, "STREAM_SECONDS", 0.1)
    rng = np.random.default_rng(1)
    t = np.arange(24_123) / 48_000
    wav = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
    wav = (wav + 0.01 * rng.standard_normal(wav.shape)).astype(np.float32)
    source = tmp_path / "long48.wav"
    sf.write(source, wav.T, 48_000, subtype="FLOAT")
    streamed_atok = tmp_path / "streamed.atok"
    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        assert compression.compress_file(source, streamed_atok, segmented_codec) is None
    whole = segmented_codec.encode(torch.from_numpy(wav))
    streamed = read_tokens(streamed_atok)
    assert torch.equal(streamed.codes, whole.codes)
    assert torch.equal(streamed.scales, whole.scales)

    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        out = tmp_path / "streamed.wav"
        assert compression.decompress_file(streamed_atok, out, segmented_codec) is None
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    expected = segmented_codec.decode(whole)[0].numpy().clip(-1, 1)
    assert rate == 48_000 and audio.shape == expected.T.shape
    # 16-bit output: one step is 3e-5.
    assert np.abs(audio - expected.T).max() < 1e-4


def test_damage_stops_a_streamed_decode_and_leaves_nothing(long_file, tmp_path, monkeypatch):
    codec = tiny_codec()
    atok = tmp_path / "x.atok"
    assert compression.compress_file(long_file, atok, codec) is None
    data = bytearray(atok.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the index is intact: the decode streams, and meets it late
    atok.write_bytes(bytes(data))
    before = sorted(tmp_path.iterdir())
    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        with pytest.raises(FormatError, match=f"^{re.escape(str(atok))}: .*recover=True"):
            compression.decompress_file(atok, tmp_path / "x.wav", codec)
    assert sorted(tmp_path.iterdir()) == before, "no output, no temporary file"
    atok.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(TruncatedError, match=r"truncated after \d+\.\d\d s \(at byte \d+\); "):
        compression.decompress_file(atok, tmp_path / "x.wav", codec)  # streamed: length unknown
    assert sorted(tmp_path.iterdir()) == before
    assert compression.decompress_file(atok, tmp_path / "x.wav", codec, recover=True)
