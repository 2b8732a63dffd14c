"""Streaming a causal codec chunk by chunk gives the offline result."""

from __future__ import annotations

import pytest
import torch
from conftest import check_stream_refusals, load_clip, tiny_codec

# (chunk size, seconds of audio): short audio for the tiny chunks, which take a step each.
CHUNKS = [(1, 0.2), (7, 0.4), (320, 1.0), (4800, 1.0)]


def stream(codec, audio: torch.Tensor, chunk: int, bandwidth: float):
    """Feeds ``audio`` ``[B, C, T]`` in chunks; returns all codes and all decoded audio."""
    codes, decoded = [], []
    emitted = 0
    with codec.streaming(audio.shape[0], bandwidth) as s:
        for start in range(0, audio.shape[-1], chunk):
            piece = s.encode(audio[..., start : start + chunk])
            emitted += piece.shape[-1]
            complete = min(start + chunk, audio.shape[-1]) // 320
            # A frame comes out as soon as its samples are in, except at the very start,
            # where the reflect padding of the frame-rate convolution (kernel 7) waits for
            # the first 7 frames.
            assert emitted == complete or (emitted == 0 and complete < 7), (emitted, complete)
            codes.append(piece)
            decoded.append(s.decode(piece))
        codes.append(s.encode_end())
        decoded += [s.decode(codes[-1]), s.decode_end()]
    return torch.cat(codes, dim=-1), torch.cat(decoded, dim=-1)[..., : audio.shape[-1]]


@pytest.mark.parametrize(("chunk", "seconds"), CHUNKS)
def test_streaming_equals_offline(chunk, seconds):
    codec = tiny_codec()
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=seconds)
    offline = codec.encode(audio, bandwidth=0.6)
    codes, decoded = stream(codec, audio, chunk, 0.6)
    assert torch.equal(codes, offline.codes)
    assert codes[:, 0].unique().numel() > 4, "degenerate codes make a weak test"
    torch.testing.assert_close(decoded, codec.decode(offline), rtol=0, atol=1e-5)


def test_streaming_a_batch_and_odd_lengths():
    codec = tiny_codec()
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=0.5).repeat(2, 1, 1)
    audio[1] *= 0.5
    audio = audio[..., :11_111]
    codes, decoded = stream(codec, audio, 999, 0.3)
    offline = codec.encode(audio, bandwidth=0.3)
    assert torch.equal(codes, offline.codes)
    torch.testing.assert_close(decoded, codec.decode(offline), rtol=0, atol=1e-5)


def test_causality_future_samples_do_not_change_past_codes():
    codec = tiny_codec()
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=1.0)
    other = audio.clone()
    other[..., 12_000:] = -other[..., 12_000:]
    with codec.streaming(1, 0.6) as a, codec.streaming(1, 0.6) as b:
        first = a.encode(audio[..., :12_000])
        assert torch.equal(first, b.encode(other[..., :12_000]))
        assert first.shape[-1] == 12_000 // 320, "every complete frame is out"
        assert not torch.equal(a.encode(audio[..., 12_000:]), b.encode(other[..., 12_000:]))


@pytest.mark.parametrize(("chunk", "seconds"), [(7, 0.2), (320, 1.0), (4800, 1.0), (333, 0.01)])
def test_non_causal_streaming_equals_offline(chunk, seconds):
    # Like MusicGen's 32 kHz codec: symmetric padding, so every layer looks ahead. The tiny
    # model has codebook entries within 1e-7 of a tie, so latents are compared (as in
    # test_batching.py); decoding is compared on the offline codes.
    codec = tiny_codec(causal=False)
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=seconds)
    offline = codec.encode(audio, bandwidth=0.6)
    with torch.inference_mode():
        latent = codec.model.encoder(audio)
    latents, decoded = [], []
    with codec.streaming(1, 0.6) as s, torch.inference_mode():
        for start in range(0, audio.shape[-1], chunk):
            latents.append(s.encoder.step(audio[..., start : start + chunk]))
        latents.append(s.encoder.end())
        for start in range(0, offline.num_frames, 3):
            decoded.append(s.decode(offline.codes[..., start : start + 3]))
        decoded.append(s.decode_end())
    torch.testing.assert_close(torch.cat(latents, dim=-1), latent, rtol=0, atol=1e-6)
    streamed = torch.cat(decoded, dim=-1)[..., : audio.shape[-1]]
    torch.testing.assert_close(streamed, codec.decode(offline), rtol=0, atol=1e-5)


def test_non_causal_decoding_streams_with_a_few_frames_of_lookahead():
    codec = tiny_codec(causal=False)
    tokens = codec.encode(load_clip("speech_24k.flac", 24_000, 1, seconds=1.0), bandwidth=0.6)
    offline = codec.decode(tokens)
    with codec.streaming(1, 0.6) as s:
        pieces = [s.decode(tokens.codes[..., f : f + 1]) for f in range(tokens.num_frames)]
        lag = tokens.num_frames - sum(p.shape[-1] for p in pieces) // 320
        pieces.append(s.decode_end())
    assert 0 < lag <= 8, "audio comes out a few frames behind the codes"
    streamed = torch.cat(pieces, dim=-1)[..., : tokens.length]
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)


def test_time_group_norm_models_refuse_to_stream_frame_by_frame():
    codec = tiny_codec(causal=False, norm="time_group_norm")
    assert not codec.can_stream
    with pytest.raises(ValueError, match="time-group norm"):
        codec.streaming()


def test_reflect_padding_waits_for_enough_samples():
    codec = tiny_codec()
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=0.1)
    with codec.streaming() as s:
        assert s.encode(audio[..., :3]).shape == (1, 1, 0)
        rest = s.encode(audio[..., 3:])
        end = s.encode_end()
    assert torch.equal(torch.cat([rest, end], dim=-1), codec.encode(audio).codes)


def test_what_a_stream_is_fed_is_checked_as_encode_checks_it():
    codec = tiny_codec()
    check_stream_refusals(codec, 0.6, load_clip("speech_24k.flac", 24_000, 1, seconds=0.2))
