"""The tokenizer interface on tiny models: shapes, bandwidths, conversion, checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_codec, tiny_config

from audiotok.audio.read import convert_audio
from audiotok.codec.config import CodecConfig
from audiotok.codec.model import EncodecModel, Segment
from audiotok.codec.tokens import Tokens
from audiotok.errors import AudioError, TokensError
from audiotok.zoo.codec_cards import ENCODEC_24KHZ, ENCODEC_32KHZ, ENCODEC_48KHZ


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_encode_shapes_and_metadata(codec):
    tokens = codec.encode(noise(1, 24_000 + 5), bandwidth=0.6)
    assert tokens.codes.dtype == torch.int64
    assert tokens.codes.shape == (1, 2, math.ceil(24_005 / 320))
    assert tokens.length == 24_005 and tokens.sample_rate == 24_000
    assert tokens.bandwidth == 0.6 and tokens.model_id == "tiny" and tokens.scales is None
    assert int(tokens.codes.min()) >= 0 and int(tokens.codes.max()) < codec.cardinality


def test_batch_and_numpy_input(codec):
    batch = noise(3, 1, 4000)
    tokens = codec.encode(batch.numpy())
    assert tokens.codes.shape[0] == 3
    assert torch.equal(tokens.codes, codec.encode(batch).codes)
    assert codec.decode(tokens).shape == (3, 1, 4000)


def test_batched_equals_one_by_one(codec, segmented_codec):
    for c in (codec, segmented_codec):
        batch = noise(3, c.channels, 7000, seed=4)
        together = c.encode(batch)
        for i in range(3):
            alone = c.encode(batch[i])
            assert torch.equal(together.codes[i : i + 1], alone.codes)
            if alone.scales is not None:
                torch.testing.assert_close(together.scales[i : i + 1], alone.scales)


def test_default_bandwidth_and_codebook_counts():
    codec = tiny_codec()
    assert codec.default_bandwidth == 0.3
    assert codec.num_codebooks() == 1 and codec.num_codebooks(0.6) == 2
    assert codec.encode(noise(1, 800)).num_codebooks == 1


def test_unsupported_bandwidth_is_a_clear_error(codec):
    with pytest.raises(AudioError, match=r"does not support 7 kbps; choose one of 0\.3, 0\.6"):
        codec.encode(noise(1, 800), bandwidth=7)


def test_official_bandwidths_give_official_codebook_counts():
    assert [ENCODEC_24KHZ.num_codebooks(b) for b in ENCODEC_24KHZ.target_bandwidths] == [
        2, 4, 8, 16, 32,
    ]  # fmt: skip
    assert [ENCODEC_48KHZ.num_codebooks(b) for b in ENCODEC_48KHZ.target_bandwidths] == [
        2, 4, 8, 16,
    ]  # fmt: skip
    assert ENCODEC_32KHZ.num_codebooks(2.2) == 4
    assert ENCODEC_24KHZ.frame_rate == 75 and ENCODEC_48KHZ.frame_rate == 150


def test_decode_restores_length_and_is_deterministic(codec):
    x = noise(1, 1, 3333)
    tokens = codec.encode(x)
    a, b = codec.decode(tokens), codec.decode(tokens)
    assert a.shape == x.shape and torch.equal(a, b)


@pytest.mark.parametrize("rate", [8_000, 44_100, 96_000])
def test_other_sample_rates_are_resampled_first(codec, rate):
    x = noise(1, rate // 2)
    tokens = codec.encode(x, sample_rate=rate)
    converted = convert_audio(x.unsqueeze(0), rate, 24_000, 1)
    assert tokens.length == converted.shape[-1] == round(rate // 2 * 24_000 / rate)
    assert torch.equal(tokens.codes, codec.encode(converted).codes)


def test_three_channels_are_mixed_to_mono(codec):
    x = noise(3, 2000)
    assert torch.equal(codec.encode(x).codes, codec.encode(x.mean(0, keepdim=True)).codes)


def test_three_channels_to_stereo_keep_the_first_two(segmented_codec):
    x = noise(3, 9000)
    assert torch.equal(segmented_codec.encode(x).codes, segmented_codec.encode(x[:2]).codes)


@pytest.mark.parametrize(
    ("wav", "message"),
    [
        (torch.full((1, 100), float("nan")), "NaN"),
        (torch.zeros(1, 0), "no audio samples"),
        (torch.zeros(100), r"shape \[C, T\] or \[B, C, T\], got \[100\]"),
        (torch.zeros(1, 1, 1, 100), r"got \[1, 1, 1, 100\]"),
        (torch.zeros(24_000, 2), r"24000 channels of 2 samples: pass \[C, T\]"),  # [T, C]
    ],
    ids=["nan", "empty", "1d", "4d", "time-major"],
)
def test_bad_audio_is_a_clear_error(codec, wav, message):
    with pytest.raises(AudioError, match=message):
        codec.encode(wav)


def test_a_fractional_sample_rate_is_refused(codec):
    with pytest.raises(AudioError, match=r"whole numbers of Hz, not 44100\.5"):
        codec.encode(torch.zeros(1, 4410), sample_rate=44100.5)


def test_segmented_model_lays_segments_end_to_end(segmented_codec):
    x = noise(2, 12_345)  # 0.26 s at 48 kHz: segments of 4800 samples every 4752
    tokens = segmented_codec.encode(x)
    segments = segmented_codec.model.segments(12_345)
    assert [s.start for s in segments] == [0, 4752, 9504]
    assert tokens.num_frames == sum(math.ceil(s.length / 320) for s in segments) == 15 + 15 + 9
    assert tokens.scales.shape == (1, 3)
    # Alone, 4800 samples still make two segments (the stride is 4752), as in the reference.
    first = segmented_codec.encode(x[:, :4800])
    assert torch.equal(tokens.codes[..., :15], first.codes[..., :15])
    torch.testing.assert_close(tokens.scales[:, :1], first.scales[:, :1])
    assert segmented_codec.decode(tokens).shape == (1, 2, 12_345)


def test_segment_layout_of_the_48khz_model_matches_its_docstring():
    with torch.device("meta"):
        model = EncodecModel(ENCODEC_48KHZ)
    assert model.segments(120_000) == [
        Segment(0, 48_000, 0, 150),
        Segment(47_520, 48_000, 150, 150),
        Segment(95_040, 24_960, 300, 78),
    ]
    assert model.num_frames(120_000) == 378


def test_causal_model_codes_do_not_depend_on_the_future(codec):
    x = noise(1, 1, 6400)
    changed = x.clone()
    changed[..., 3200:] = noise(1, 1, 3200, seed=9)
    a, b = codec.encode(x, bandwidth=0.6).codes, codec.encode(changed, bandwidth=0.6).codes
    complete = 3200 // 320  # frames whose window ends before the change
    assert torch.equal(a[..., :complete], b[..., :complete])
    assert not torch.equal(a, b)


def test_folded_weights_follow_weight_updates(codec):
    x = noise(1, 1, 3200)
    before = codec.decode(codec.encode(x))
    state = {
        k: v + 0.05 if k.endswith("weight_v") else v for k, v in codec.model.state_dict().items()
    }
    codec.model.load_state_dict(state)
    after = codec.decode(codec.encode(x))
    fresh = tiny_codec()
    fresh.model.load_state_dict(state)
    assert not torch.equal(before, after), "the cached folded weight must be recomputed"
    assert torch.equal(after, fresh.decode(fresh.encode(x)))


def test_decode_checks_the_tokens(codec, segmented_codec):
    good = codec.encode(noise(1, 3200), bandwidth=0.6)

    def variant(**changes):
        fields = dict(
            codes=good.codes, scales=None, length=good.length, sample_rate=24_000,
            bandwidth=0.6, model_id="tiny",
        )  # fmt: skip
        fields.update(changes)
        return Tokens(**fields)

    with pytest.raises(TokensError, match="16000 Hz"):
        codec.decode(variant(sample_rate=16_000))
    with pytest.raises(TokensError, match="codebooks"):
        codec.decode(variant(codes=torch.zeros(1, 5, 10, dtype=torch.long)))
    with pytest.raises(TokensError, match="frames"):
        codec.decode(variant(length=6400))
    with pytest.raises(TokensError, match=r"outside \[0, 16\)"):
        codec.decode(variant(codes=torch.full_like(good.codes, 16)))
    with pytest.raises(TokensError, match="does not normalise"):
        codec.decode(variant(scales=torch.ones(1, 1)))
    stereo = segmented_codec.encode(noise(2, 9000))
    stereo.scales = None
    with pytest.raises(TokensError, match="one scale per segment"):
        segmented_codec.decode(stereo)
    with pytest.warns(UserWarning, match="garbage unless both share weights"):
        codec.decode(variant(model_id="other"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codec.decode(good)


def test_config_round_trips_through_json_and_rejects_nonsense():
    cfg = tiny_config(segment=0.5, normalize=True, causal=False)
    assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown codec config fields: colour"):
        CodecConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="can't be causal"):
        tiny_config(norm="time_group_norm")
    with pytest.raises(ValueError, match="power of two"):
        tiny_config(bins=1000)
    with pytest.raises(ValueError, match="channels must be 1 or 2"):
        tiny_config(channels=3)


def test_tokens_properties_match_the_docstring_example():
    t = Tokens(torch.zeros(1, 8, 75, dtype=torch.long), None, 24_000, 24_000, 6.0, "encodec_24khz")
    assert (t.batch_size, t.num_codebooks, t.num_frames, t.duration) == (1, 8, 75, 1.0)
    assert t.to("cpu").codes.data_ptr() != 0
    with pytest.raises(TokensError, match=r"\[B, K, F\]"):
        Tokens(torch.zeros(8, 75, dtype=torch.long), None, 1, 24_000, 6.0, "x")


def test_integer_pcm_is_rejected_with_a_hint(codec):
    pcm = np.zeros((1, 800), dtype=np.int16)
    with pytest.raises(AudioError, match=r"expected float samples, got int16"):
        codec.encode(pcm)
