"""The Snake activation (``CodecConfig.activation = "Snake"``, DAC's) in the codec.

Parity with transformers' DAC implementation, then a tiny Snake codec through what an ELU
codec goes through: a card on disk and back, streaming equals offline, a ragged batch equals
each signal alone (the ONNX graphs are checked in tests/test_onnx.py).
"""

from __future__ import annotations

import pytest
import torch
from conftest import load_clip, tiny_codec
from reference_models import codebooks_from_latents_

from audiotok.codec.config import CodecConfig
from audiotok.codec.load import load_codec
from audiotok.codec.snake import Snake1d
from audiotok.zoo.codec_checkpoints import save_checkpoint


def snake_codec():
    """A tiny Snake codec whose alphas are not all 1 (so that they matter)."""
    codec = tiny_codec("tiny-snake", activation="Snake")
    model, gen = codec.model, torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Snake1d):
                module.alpha.copy_(0.5 + 1.5 * torch.rand(module.alpha.shape, generator=gen))
        # Codebooks spread over the latents of these alphas, as tiny_codec's over its own.
        latent = model.encoder(torch.randn(1, 1, 6000, generator=gen) * 0.1)
        codebooks = [layer._codebook.embed for layer in model.quantizer.vq.layers]
        codebooks_from_latents_(codebooks, latent, 0)
    return codec


def test_snake_matches_transformers_dac():
    dac = pytest.importorskip("transformers.models.dac.modeling_dac")
    ours, theirs = Snake1d(6), dac.Snake1d(6)
    alpha = torch.rand(1, 6, 1, generator=torch.Generator().manual_seed(0)) * 3
    ours.load_state_dict({"alpha": alpha})
    theirs.load_state_dict({"alpha": alpha})
    x = torch.randn(2, 6, 50)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        CodecConfig(sample_rate=24_000, channels=1, causal=True, activation="GELU")


def test_a_snake_codec_round_trips_through_a_card(tmp_path):
    codec = snake_codec()
    keys = [k for k in codec.model.state_dict() if k.endswith(".alpha")]
    # Where EnCodec has its ELUs: in each residual block, before each resampling, after the LSTM.
    assert "encoder.model.1.block.0.alpha" in keys and "encoder.model.2.alpha" in keys
    assert len(keys) == 2 * (2 * 4 + 4 + 1)  # 4 stages: block (2) + resampling (1); + last
    card = save_checkpoint(codec.model, tmp_path / "snake.json", name="tiny-snake", half=False)
    loaded = load_codec(card)
    assert loaded.config.activation == "Snake"
    assert loaded.fingerprint() == codec.fingerprint()
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=0.5)
    tokens = codec.encode(audio, bandwidth=0.6)
    assert torch.equal(loaded.encode(audio, bandwidth=0.6).codes, tokens.codes)
    torch.testing.assert_close(loaded.decode(tokens), codec.decode(tokens), rtol=0, atol=0)


def test_a_snake_codec_streams_and_batches_as_offline():
    codec = snake_codec()
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=1.0)
    offline = codec.encode(audio, bandwidth=0.6)
    assert offline.codes[:, 0].unique().numel() > 4, "degenerate codes make a weak test"
    with codec.streaming(1, 0.6) as stream:
        codes = [stream.encode(audio[..., i : i + 777]) for i in range(0, audio.shape[-1], 777)]
        codes.append(stream.encode_end())
        codes = torch.cat(codes, dim=-1)
        decoded = torch.cat([stream.decode(codes), stream.decode_end()], dim=-1)
    assert torch.equal(codes, offline.codes)
    torch.testing.assert_close(
        decoded[..., : audio.shape[-1]], codec.decode(offline), rtol=0, atol=1e-5
    )
    wavs = [audio[0, :, : 24_000 - 997 * i] for i in range(3)]
    batched = codec.encode_batch(wavs, bandwidth=0.6)
    for wav, tokens in zip(wavs, batched, strict=True):
        alone = codec.encode(wav, bandwidth=0.6)
        assert torch.equal(tokens.codes, alone.codes)
    for tokens, audio_b in zip(batched, codec.decode_batch(batched), strict=True):
        torch.testing.assert_close(audio_b, codec.decode(tokens), rtol=0, atol=1e-5)
