"""Streaming on the ONNX backend: the one-step graphs with explicit state
(codec/onnx_stream_export.py) run by codec/onnx_stream.py equal the offline graphs.

Two causal models: the packaged default (constant padding: the stream starts at the first
frame) and the same weights with the official 24 kHz EnCodec's ``reflect`` padding (the start
graph waits for 7 frames, and a shorter stream falls back to the offline graphs). Chunks of
1 sample to several frames, batch 1 and 2, signals that end mid-frame.

Why not random official weights here: they amplify float rounding so much that the torch
model's own offline codes of a signal's first frames change with its length (frame 0 of 2240
and of 2560 samples differ), so no stream could equal them; the non-streaming graphs are
checked on them in tests/test_onnx_backend.py.
"""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch
from conftest import DATA, bare_tiny, check_stream_refusals, load_clip

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from audiotok.codec.conv import SConv1d
from audiotok.codec.load import load_codec
from audiotok.codec.onnx_export import export_onnx
from audiotok.codec.onnx_runtime import OnnxCodec

AUDIO_TOL = 1e-4


@pytest.fixture(scope="module")
def default(default_onnx) -> OnnxCodec:
    return OnnxCodec(default_onnx)


@pytest.fixture(scope="module")
def reflect(tmp_path_factory) -> OnnxCodec:
    codec = copy.deepcopy(load_codec("audiotok_24khz"))
    for module in codec.model.modules():
        if isinstance(module, SConv1d):
            module.pad_mode = "reflect"
    return OnnxCodec(export_onnx(codec, tmp_path_factory.mktemp("r")))


def streamed_codes(codec: OnnxCodec, wav: torch.Tensor, chunk: int, bandwidth: float):
    """``wav`` ``[B, C, T]`` fed ``chunk`` samples at a time -> codes ``[B, K, F]`` (numpy)."""
    with codec.streaming(wav.shape[0], bandwidth) as stream:
        parts = [stream.encode(wav[..., i : i + chunk]) for i in range(0, wav.shape[-1], chunk)]
        parts.append(stream.encode_end())
    return np.concatenate(parts, axis=-1)


def streamed_audio(codec: OnnxCodec, codes: np.ndarray, chunk: int) -> np.ndarray:
    """``codes`` ``[B, K, F]`` fed ``chunk`` frames at a time -> audio ``[B, C, F * hop]``."""
    with codec.streaming(codes.shape[0], codec.bandwidths[-1]) as stream:
        parts = [stream.decode(codes[..., i : i + chunk]) for i in range(0, codes.shape[-1], chunk)]
        parts.append(stream.decode_end())
    return np.concatenate(parts, axis=-1)


def offline(codec: OnnxCodec, wav: torch.Tensor, bandwidth: float) -> np.ndarray:
    return codec.encode(wav, codec.sample_rate, bandwidth).codes


@pytest.mark.parametrize("model", ["default", "reflect"])
def test_streamed_codes_and_audio_equal_offline(model, request):
    codec: OnnxCodec = request.getfixturevalue(model)
    assert codec.can_stream
    meta = codec.meta["streaming"]
    assert meta["start_frames"] == (1 if model == "default" else 7)
    speech = load_clip("speech_24k.flac", 24_000, 1, seconds=1.0)  # [1, 24000]
    music = load_clip("music_48k_stereo.flac", 24_000, 1, seconds=1.0)
    wav = torch.cat([speech, music])[..., :23_977]  # [2, 1, T], ends mid-frame
    bandwidth = codec.bandwidths[-1]
    expected = offline(codec, wav, bandwidth)
    for chunk in (1, 7, 320, 4801):
        batch = wav if chunk != 1 else wav[:1, :, :3000]  # one sample at a time: short
        want = expected if chunk != 1 else offline(codec, batch, bandwidth)
        got = streamed_codes(codec, batch, chunk, bandwidth)
        assert got.shape == want.shape and got.dtype == np.int64
        assert np.array_equal(got, want), (chunk, float((got == want).mean()))
    low = codec.bandwidths[0]  # fewer codebooks: the first K rows of the same codes
    assert np.array_equal(streamed_codes(codec, wav, 777, low), offline(codec, wav, low))
    audio = codec.decode(codec.encode(wav, codec.sample_rate, bandwidth))
    for chunk in (1, 3, 40):
        got = streamed_audio(codec, expected, chunk)[..., : wav.shape[-1]]
        assert got.shape == audio.shape
        assert np.abs(got - audio).max() <= AUDIO_TOL, chunk


def test_a_stream_shorter_than_the_start_graph_is_coded_offline(reflect):
    start = reflect.meta["streaming"]["start_samples"]  # 7 frames of 320 samples
    assert start == 7 * 320
    wav = load_clip("music_48k_stereo.flac", 24_000, 1, seconds=0.1)[..., :2000]
    bandwidth = reflect.bandwidths[-1]
    with reflect.streaming(1, bandwidth) as stream:
        assert stream.encode(wav).shape == (1, 32, 0)  # waits for the start graph's input
        codes = stream.encode_end()
    assert np.array_equal(codes, offline(reflect, wav, bandwidth))
    with reflect.streaming(1, bandwidth) as stream:
        assert stream.decode(codes[..., :3]).shape == (1, 1, 0)
        audio = np.concatenate([stream.decode(codes[..., 3:]), stream.decode_end()], axis=-1)
    expected = reflect.decode(reflect.encode(wav, 24_000, bandwidth))
    assert np.abs(audio[..., :2000] - expected).max() <= AUDIO_TOL
    with pytest.raises(RuntimeError, match="closed"):
        stream.decode(codes)


def test_long_files_stream_through_the_graphs_into_the_same_bytes(default, tmp_path):
    from audiotok.compression.decode import decode_stream
    from audiotok.compression.streams import compress_streaming

    torch_codec = load_codec("audiotok_24khz")
    files = []
    for codec in (torch_codec, default):
        out = io.BytesIO()
        compress_streaming(out, DATA / "speech_24k.flac", codec, 6.0)
        files.append(out.getvalue())
    assert files[0] == files[1]
    expected = decode_stream(files[0], torch_codec).audio.numpy()
    assert np.abs(decode_stream(files[0], default).audio - expected).max() <= AUDIO_TOL


def test_models_that_look_ahead_have_no_streaming_graphs(tmp_path, segmented_onnx):
    noncausal = tmp_path / "noncausal"
    export_onnx(bare_tiny(), noncausal)
    for folder in (noncausal, segmented_onnx):  # the segmented one: the run's (conftest.py)
        meta = json.loads((folder / "model.json").read_text())
        assert meta["streaming"] is None and meta["no_streaming"]
        assert not (folder / "encoder_step.onnx").exists()
        onnx_codec = OnnxCodec(folder)
        assert not onnx_codec.can_stream
        with pytest.raises(ValueError, match="can't stream on the onnx backend: "):
            onnx_codec.streaming(1)


def test_what_the_stream_is_fed_is_checked_as_the_torch_stream_checks_it(default):
    """int16 or NaN samples were coded, and codes of -1 decoded as 1023 (Gather wraps)."""
    check_stream_refusals(default, 6.0, load_clip("speech_24k.flac", 24_000, 1, seconds=0.2))
