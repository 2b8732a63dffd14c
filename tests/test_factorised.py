"""DAC's factorised codes (``CodecConfig.codebook_dim``) in the codec and in training.

Parity of one stage with transformers' DAC quantizer, then a tiny factorised codec through
what an EnCodec one goes through (a card on disk and back, streaming equals offline, ONNX
graphs), then training: the entries learn by gradient, resume is exact.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import load_clip, tiny_codec
from test_onnx import SPEECH, check_unsegmented
from test_streaming import stream
from test_train import tiny_config, write_manifest

from audiotok.codec.config import CodecConfig
from audiotok.codec.load import load_codec
from audiotok.codec.quantization import FactorisedVectorQuantization
from audiotok.train.trainer import Trainer
from audiotok.zoo.codec_checkpoints import save_checkpoint


def test_lookup_is_by_cosine_not_distance():
    # The docstring's example: [0.9, 1] is nearer [1, 0], but at a smaller angle to [0, 4].
    stage = FactorisedVectorQuantization(dim=3, codebook_dim=2, codebook_size=2)
    stage._codebook.embed.copy_(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    assert stage.lookup(torch.tensor([[[0.9], [1.0]]])).tolist() == [[1]]


def test_a_stage_matches_transformers_dac():
    dac = pytest.importorskip("transformers.models.dac.modeling_dac")
    from transformers import DacConfig

    torch.manual_seed(0)
    ours = FactorisedVectorQuantization(dim=12, codebook_dim=4, codebook_size=32)
    ours._codebook.embed.normal_()
    config = DacConfig(hidden_size=12, codebook_dim=4, codebook_size=32)
    theirs = dac.DacVectorQuantize(config)
    with torch.no_grad():
        for name in ("in_proj", "out_proj"):
            conv = getattr(ours, name)
            getattr(theirs, name).weight.copy_(conv.effective_weight())
            getattr(theirs, name).bias.copy_(conv.bias)
        theirs.codebook.weight.copy_(ours._codebook.embed)
        x = torch.randn(2, 12, 40)
        quantized, _, _, codes, _ = theirs(x)
        assert codes.unique().numel() > 8, "degenerate codes make a weak test"
        assert torch.equal(ours.encode(x), codes)
        torch.testing.assert_close(ours.decode(codes), quantized, rtol=0, atol=1e-6)


def test_codebook_dim_is_checked():
    with pytest.raises(ValueError, match="codebook_dim must be in"):
        CodecConfig(sample_rate=24_000, channels=1, causal=True, dimension=8, codebook_dim=9)


def test_a_factorised_codec_round_trips_streams_and_batches(tmp_path):
    codec = tiny_codec("tiny-fact", codebook_dim=4)
    keys = codec.model.state_dict().keys()
    assert "quantizer.vq.layers.3.in_proj.weight_v" in keys
    assert codec.model.quantizer.vq.layers[0].codebook.shape == (16, 4)
    audio = load_clip("speech_24k.flac", 24_000, 1, seconds=1.0)
    offline = codec.encode(audio, bandwidth=0.6)
    assert offline.codes[:, 0].unique().numel() > 4, "degenerate codes make a weak test"
    card = save_checkpoint(codec.model, tmp_path / "f.json", name="tiny-fact", half=False)
    loaded = load_codec(card)
    assert loaded.config.codebook_dim == 4
    assert torch.equal(loaded.encode(audio, bandwidth=0.6).codes, offline.codes)
    codes, decoded = stream(codec, audio, 777, 0.6)
    assert torch.equal(codes, offline.codes)
    torch.testing.assert_close(decoded, codec.decode(offline), rtol=0, atol=1e-5)
    wavs = [audio[0, :, : 24_000 - 997 * i] for i in range(3)]
    for wav, tokens in zip(wavs, codec.encode_batch(wavs, bandwidth=0.6), strict=True):
        assert torch.equal(tokens.codes, codec.encode(wav, bandwidth=0.6).codes)


def test_a_factorised_codec_exports_to_onnx(tmp_path):
    check_unsegmented(tiny_codec("tiny-fact", codebook_dim=4), tmp_path, [(SPEECH, 0.37, 0.99)])


@pytest.mark.parametrize("dropout", [1.0, 0.5])
def test_factorised_entries_learn_by_gradient_and_resume_exactly(tmp_path, dropout):
    manifest = write_manifest(tmp_path / "audio")
    config = tiny_config(manifest, steps=4)
    model = dataclasses.replace(config.model, codebook_dim=4)
    codebooks = dataclasses.replace(config.codebooks, dropout=dropout)
    config = dataclasses.replace(config, model=model, codebooks=codebooks)
    straight = Trainer(config, tmp_path / "a")
    stage = straight.codec.model.quantizer.vq.layers[0]
    assert isinstance(stage._codebook.embed, torch.nn.Parameter)
    before = stage._codebook.embed.detach().clone()
    metrics = straight.train_step()
    assert metrics["codebook"] > 0 and metrics["commitment"] > 0
    assert not torch.equal(stage._codebook.embed, before)  # Adam moved the entries
    assert float(stage._codebook.cluster_size.sum()) == 0  # no EMA statistics
    straight.run()
    first = Trainer(config, tmp_path / "b")
    first.run(until=2)
    resumed = Trainer(config, tmp_path / "b")
    resumed.run()
    a, b = straight.codec.state_dict(), resumed.codec.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert set(straight.validate()) == {f"{b:g}kbps/speech" for b in (4, 8, 16)}
