"""Segment streaming (48 kHz-style models) gives the offline codes, scales and audio."""

from __future__ import annotations

import pytest
import torch
from conftest import load_clip, tiny_codec

from audiotok.codec.segment_streaming import SegmentStream

# The tiny segmented model: 0.1 s segments (4800 samples at 48 kHz) every 4752 samples,
# 15 frames of 320 samples each. Lengths: shorter than a segment; exactly one (which adds a
# 48-sample segment inside its span); a short and a nearly full last segment; several full
# segments. Its overlap (48 samples) is shorter than a frame; the 48 kHz model's (480) is
# not: test_overlap_longer_than_a_frame.
LENGTHS = [100, 4800, 4752 + 4500, 4752 + 4790, 3 * 4752 + 1234]


def stream(codec, audio, chunk):
    codes, scales, decoded = [], [], []
    with codec.streaming(audio.shape[0], 2.4) as s:
        assert isinstance(s, SegmentStream)
        pieces = []
        for start in range(0, audio.shape[-1], chunk):
            pieces += s.encode(audio[..., start : start + chunk])
        pieces += s.encode_end()
        for c, scale in pieces:
            codes.append(c)
            scales.append(scale)
            decoded.append(s.decode(c, scale))
        decoded.append(s.decode_end())
    audio_out = torch.cat(decoded, dim=-1)[..., : audio.shape[-1]]
    return torch.cat(codes, dim=-1), torch.stack(scales, dim=1), audio_out


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("chunk", [1000, 4800, 20_000])
def test_segment_streaming_equals_offline(segmented_codec, length, chunk):
    codec = segmented_codec
    audio = load_clip("music_48k_stereo.flac", 48_000, 2, seconds=0.5)[..., :length]
    offline = codec.encode(audio, bandwidth=2.4)
    codes, scales, decoded = stream(codec, audio, chunk)
    assert torch.equal(codes, offline.codes)
    assert torch.equal(scales, offline.scales)
    assert decoded.shape == audio.shape
    torch.testing.assert_close(decoded, codec.decode(offline), rtol=0, atol=1e-6)


def test_each_segment_comes_out_when_its_samples_are_in(segmented_codec):
    audio = load_clip("music_48k_stereo.flac", 48_000, 2, seconds=0.3)
    with segmented_codec.streaming(1, 2.4) as s:
        assert s.encode(audio[..., :4799]) == []
        (first,) = s.encode(audio[..., 4799:4800])
        assert first[0].shape == (1, 4, 15)  # [B, K, frames of one segment]
        assert len(s.encode(audio[..., 4800 : 4752 + 4800])) == 1
        assert s.decode(*first).shape[-1] == 4752, "the overlap waits for the next segment"


@pytest.mark.parametrize("length", [4600, 2 * 4320 + 300, 4320 + 4799])
def test_overlap_longer_than_a_frame(length):
    # The 48 kHz model's 10 ms overlap is longer than its 6.7 ms frames: a last segment of
    # one frame can end before the one before it (4600 samples: 4600 then 280).
    codec = tiny_codec(
        "tiny48o", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, segment=0.1, overlap=0.1, target_bandwidths=(1.2, 2.4),
    )  # fmt: skip
    audio = load_clip("music_48k_stereo.flac", 48_000, 2, seconds=0.5)[..., :length]
    offline = codec.encode(audio, bandwidth=2.4)
    decoded = codec.decode(offline)
    assert decoded.shape == audio.shape
    codes, scales, streamed = stream(codec, audio, 1000)
    assert torch.equal(codes, offline.codes) and torch.equal(scales, offline.scales)
    torch.testing.assert_close(streamed, decoded, rtol=0, atol=1e-6)
    (batched,) = codec.decode_batch([offline])
    torch.testing.assert_close(batched, decoded, rtol=0, atol=1e-5)


def test_two_short_last_segments_are_refused_by_atok_not_lost():
    # Format 1.0 holds one segment per packet and lets only the last packet be short. A
    # signal whose last two segments are both short (here 14 and 1 frames of 15) can't be
    # stored: refused in one line rather than written without one of its scales.
    import audiotok
    from audiotok import compression

    codec = tiny_codec(
        "tiny48o", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, segment=0.1, overlap=0.1, target_bandwidths=(1.2, 2.4),
    )  # fmt: skip
    audio = load_clip("music_48k_stereo.flac", 48_000, 2, seconds=0.5)[0]
    good = audio[:, :4600]  # segments of 15 and 1 frames
    decoded, rate = audiotok.decompress(compression.compress(codec, good), codec)
    assert decoded.shape == good.shape and rate == 48_000
    bad = audio[:, : 4320 + 4450]
    assert [s.frames for s in codec.model.segments(bad.shape[-1])] == [15, 14, 1]
    with pytest.raises(audiotok.TokensError, match="can't hold"):
        compression.compress(codec, bad)


def test_segmented_model_without_normalisation_streams_without_scales():
    codec = tiny_codec("tiny48n", sample_rate=48_000, channels=2, causal=False, segment=0.1,
                       target_bandwidths=(1.2, 2.4))  # fmt: skip
    audio = load_clip("music_48k_stereo.flac", 48_000, 2, seconds=0.3)
    offline = codec.encode(audio, bandwidth=2.4)
    with codec.streaming(1, 2.4) as s:
        pieces = s.encode(audio) + s.encode_end()
        assert all(scale is None for _, scale in pieces)
        decoded = [s.decode(c, scale) for c, scale in pieces] + [s.decode_end()]
    assert torch.equal(torch.cat([c for c, _ in pieces], dim=-1), offline.codes)
    streamed = torch.cat(decoded, dim=-1)[..., : audio.shape[-1]]
    torch.testing.assert_close(streamed, codec.decode(offline), rtol=0, atol=1e-6)


def test_a_segment_is_decoded_with_its_scale_and_alone(segmented_codec):
    """Without a scale the stream decoded at the wrong loudness, with NaN it gave NaN, and two
    segments' codes at once threw the overlap-add off."""
    from audiotok.errors import TokensError

    wav = torch.randn(1, 2, 9600) * 0.1
    with segmented_codec.streaming(1, 2.4) as s:
        (codes, scale), (codes2, _), *_ = s.encode(wav) + s.encode_end()
        for bad_scale, message in [
            (None, r"scales are \[B=1\], not None"),
            (torch.tensor([float("nan")]), "NaN or infinite"),
            (torch.ones(2), r"not \[2\]"),
        ]:
            with pytest.raises(TokensError, match=message):
                s.decode(codes, bad_scale)
        with pytest.raises(TokensError, match="one segment at a time"):
            s.decode(torch.cat([codes, codes2], dim=-1), scale)
        assert s.decode(codes, scale[:, None]).shape[0] == 1  # a column of Tokens.scales
    tokens = segmented_codec.encode(wav, bandwidth=2.4)
    tokens.scales[0, 0] = float("nan")
    with pytest.raises(TokensError, match="NaN or infinite scales"):
        segmented_codec.decode(tokens)


def test_streams_run_in_exact_float32(segmented_codec, monkeypatch):
    """Both kinds of stream ask for float32 with TF32 off (on CUDA PyTorch's default TF32
    convolutions made streamed codes differ from one-pass ``fp32`` ones)."""
    from audiotok import load_codec
    from audiotok.codec import precision

    asked = []
    real = precision.precision_context

    def spy(mode, device):
        asked.append(mode)
        return real(mode, device)

    monkeypatch.setattr(precision, "precision_context", spy)
    for codec, audio in ((segmented_codec, torch.zeros(1, 2, 5000)), (load_codec(), None)):
        with codec.streaming(1) as s:
            if audio is not None:
                pieces = s.encode(audio) + s.encode_end()
                s.decode(*pieces[0])
            else:
                s.decode(s.encode(torch.zeros(1, 1, 3200)))
        assert asked and set(asked) == {"fp32"}
        asked.clear()
