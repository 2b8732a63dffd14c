"""Long files: compressed and decompressed as streams, block by block, in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_codec

from audiotok import compression
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


def test_non_causal_codecs_fall_back_to_memory(long_file, tmp_path, segmented_codec):
    tokens = compression.compress_file(long_file, tmp_path / "x.atok", segmented_codec)
    assert tokens is not None
    decoded = compression.decompress_file(tmp_path / "x.atok", tmp_path / "x.wav", segmented_codec)
    assert decoded is not None and torch.isfinite(decoded.audio).all()
