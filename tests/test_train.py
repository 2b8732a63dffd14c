"""The training recipe: data, losses, codebook learning, exact resume, export, CLI.

Everything runs on a tiny model (16 kHz, 4 codebooks of 16) and synthetic audio written to
``tmp_path``, a few steps each, so the whole file takes seconds on a CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F

import audiotok
from audiotok.cli.main import cli
from audiotok.codec.config import CodecConfig
from audiotok.codec.quantization import EuclideanCodebook
from audiotok.train.balancer import Balancer
from audiotok.train.config import DataConfig, LossConfig, OptimConfig, TrainConfig, load_config
from audiotok.train.data import CropSampler, read_manifest, split_by_source
from audiotok.train.export import export_codec
from audiotok.train.losses import (
    LogMelL1Loss,
    MultiScaleMelLoss,
    mel_distance,
    mel_filterbank,
    si_sdr,
)
from audiotok.train.state import CHECKPOINT_NAME
from audiotok.train.trainable import CodebookTraining, TrainableCodec, ema_update
from audiotok.train.trainer import LOG_NAME, Trainer

RATE = 16_000
TINY_MODEL = CodecConfig(
    sample_rate=RATE,
    channels=1,
    causal=True,
    n_filters=4,
    dimension=8,
    lstm=1,
    ratios=(4, 4),
    n_q=4,
    bins=16,
    target_bandwidths=(4.0, 8.0, 16.0),
)


def write_manifest(root: Path) -> Path:
    """Three sources of synthetic audio: two for training, one held out."""
    rng = np.random.default_rng(0)
    rows = ["category\tsource\tpath\tsample_rate\tchannels\tseconds"]
    t = np.arange(RATE) / RATE
    for source, category, rate in (
        ("tones", "music", 22_050),
        ("noise", "sfx", RATE),
        ("held", "speech", 8_000),
    ):
        for i in range(2):
            n = rate  # one second
            tt = np.arange(n) / rate
            if category == "sfx":
                x = 0.1 * rng.standard_normal(n)
            else:
                x = (
                    0.3
                    * np.sin(2 * np.pi * (220 + 110 * i) * tt)
                    * (1 + 0.5 * np.sin(2 * np.pi * 3 * tt))
                )
            path = root / source / f"{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x.astype(np.float32), rate)
            rows.append(f"{category}\t{source}\t{source}/{i}.flac\t{rate}\t1\t1.0")
    assert t.size == RATE
    manifest = root / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def tiny_config(manifest: Path, **changes) -> TrainConfig:
    config = TrainConfig(
        model=TINY_MODEL,
        data=DataConfig(
            manifest=str(manifest),
            validation_sources=("held",),
            segment=0.25,
            batch_size=2,
            validation_items=4,
        ),
        losses=LossConfig(disc_filters=2, disc_ffts=(64, 128), adversarial_start=0),
        optim=OptimConfig(lr=3e-3, warmup_steps=1),
        codebooks=CodebookTraining(kmeans_iters=2),
        steps=40,
        log_every=1,
        validate_every=0,
        checkpoint_every=1000,
    )
    return dataclasses.replace(config, **changes)


@pytest.fixture
def manifest(tmp_path) -> Path:
    return write_manifest(tmp_path / "audio")


# --- data -------------------------------------------------------------------------------------


def test_split_holds_out_whole_sources(manifest):
    train, valid = split_by_source(read_manifest(manifest), ("held",))
    assert {i.source for i in train} == {"tones", "noise"}
    assert {i.source for i in valid} == {"held"} and len(valid) == 2


def test_batches_are_a_function_of_seed_and_step(manifest):
    train, _ = split_by_source(read_manifest(manifest), ("held",))
    config = DataConfig(segment=0.25, batch_size=3)
    a = CropSampler(train, config, RATE, seed=1)
    b = CropSampler(train, config, RATE, seed=1)
    assert a.batch(5).shape == (3, 1, 4000)
    assert torch.equal(a.batch(5), b.batch(5))
    assert not torch.equal(a.batch(5), a.batch(6))
    rms_db = 20 * torch.log10(a.batch(7).square().mean(dim=-1).sqrt())
    assert ((rms_db > -20 - 6.5) & (rms_db < -20 + 6.5)).all()  # target level +- jitter


def test_fixed_items_are_the_fixed_set_with_their_files(manifest):
    train, _ = split_by_source(read_manifest(manifest), ("held",))
    sampler = CropSampler(train, DataConfig(segment=0.25), RATE, seed=1)
    crops, categories = sampler.fixed_set(4)
    same, items = sampler.fixed_items(4)
    assert torch.equal(crops, same)
    assert [item.category for item in items] == categories
    assert all(item in train for item in items)


def test_manifest_errors_name_the_line(tmp_path):
    bad = tmp_path / "m.tsv"
    bad.write_text(
        "category\tsource\tpath\tsample_rate\tchannels\tseconds\nmusic\tx\ta.wav\tfast\t1\t2\n"
    )
    with pytest.raises(ValueError, match=r"m.tsv:2: malformed row"):
        read_manifest(bad)
    (tmp_path / "n.tsv").write_text("path\n")
    with pytest.raises(ValueError, match="needs the columns"):
        read_manifest(tmp_path / "n.tsv")
    for seconds in ("nan", "inf", "-1"):  # they surfaced as "probabilities contain NaN"
        (tmp_path / "s.tsv").write_text(
            "category\tsource\tpath\tsample_rate\tchannels\tseconds\n"
            f"music\tx\ta.wav\t8000\t1\t{seconds}\n"
        )
        with pytest.raises(ValueError, match=r"s.tsv:2: .*seconds finite and >= 0"):
            read_manifest(tmp_path / "s.tsv")


def test_a_missing_file_is_found_before_the_first_step(tmp_path, manifest):
    rows = manifest.read_text().splitlines()
    broken = manifest.parent / "broken.tsv"  # paths are relative to its folder
    broken.write_text("\n".join([*rows, rows[1].replace(".flac", "-gone.flac")]) + "\n")
    config = tiny_config(broken)
    with pytest.raises(ValueError, match=r"broken.tsv: 1 listed files missing: .*-gone.flac"):
        Trainer(config, tmp_path / "run")


def test_a_category_the_weights_do_not_name_is_said(tmp_path, manifest):
    config = tiny_config(manifest)
    data = dataclasses.replace(config.data, category_weights={"music": 1.0})  # no sfx
    with pytest.warns(UserWarning, match="categories sfx have no data.category_weights entry"):
        Trainer(dataclasses.replace(config, data=data), tmp_path / "run")


def test_config_round_trip_and_unknown_fields(tmp_path, manifest):
    config = tiny_config(manifest)
    assert TrainConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "c.json"
    data = config.to_dict()
    data["data"]["manifest"] = "audio/manifest.tsv"
    path.write_text(json.dumps(data))
    assert load_config(path).data.manifest == str(tmp_path / "audio/manifest.tsv")
    data["optim"]["learning_rate"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="optim: unknown fields learning_rate"):
        load_config(path)


# --- losses and metrics -----------------------------------------------------------------------


def test_mel_filterbank_matches_transformers():
    from transformers.audio_utils import mel_filter_bank

    for rate, n_fft, n_mels in ((24_000, 1024, 64), (16_000, 512, 80)):
        ref = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=rate / 2,
            sampling_rate=rate,
            norm=None,
            mel_scale="htk",
        )
        ours = mel_filterbank(rate, n_fft, n_mels).numpy()
        np.testing.assert_allclose(ours, ref.T, atol=1e-6)


def test_si_sdr_and_mel_distance():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8000, generator=gen)
    noise = torch.randn(2, 1, 8000, generator=gen)
    noise = noise / noise.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True) / 10
    assert (si_sdr(3 * x, x) > 60).all()  # scale-invariant
    np.testing.assert_allclose(si_sdr(x + noise, x).numpy(), 20.0, atol=0.5)
    assert torch.equal(mel_distance(x, x, RATE), torch.zeros(2))
    assert (mel_distance(x + noise, x, RATE) < mel_distance(x + 5 * noise, x, RATE)).all()


def test_log_mel_loss_sees_noise_in_an_empty_band():
    """What made speech's mel distance lag: noise 70 dB down, above a band-limited input.

    audiocraft's window-normalised loss floors it away; DAC's log-mel L1 counts it, as the
    mel distance we report does.
    """
    t = torch.arange(RATE) / RATE
    x = (0.1 * torch.sin(2 * torch.pi * 440 * t))[None, None]
    noise = torch.fft.rfft(torch.randn(1, 1, RATE, generator=torch.Generator().manual_seed(0)))
    noise[..., torch.fft.rfftfreq(RATE, 1 / RATE) < 5000] = 0
    noise = torch.fft.irfft(noise, n=RATE)
    noise = noise / noise.square().mean().sqrt() * 0.1 * 10 ** (-70 / 20)
    log_mel = LogMelL1Loss(RATE)
    assert float(log_mel(x, x)) == 0.0
    assert float(MultiScaleMelLoss(RATE)(x + noise, x)) < 1e-5
    assert float(log_mel(x + noise, x)) > 0.1
    assert float(mel_distance(x + noise, x, RATE)) > 0.01
    # Finite gradients through digital silence (the magnitude's square root at 0).
    half_silent = x.clone()
    half_silent[..., : RATE // 2] = 0
    half_silent.requires_grad_()
    log_mel(half_silent, x).backward()
    assert torch.isfinite(half_silent.grad).all() and half_silent.grad.abs().sum() > 0


def test_balancer_mixes_normalised_gradients():
    y = torch.zeros(1, 1, 4, requires_grad=True)
    g1 = torch.tensor([1.0, 0, 0, 0]).view(1, 1, 4)
    g2 = torch.tensor([0, 0, 0, 1.0]).view(1, 1, 4)
    balancer = Balancer({"a": 3.0, "b": 1.0}, total_norm=2.0)
    norms = balancer.backward({"a": (y * g1).sum(), "b": 1000 * (y * g2).sum()}, y)
    assert norms == {"a": 1.0, "b": 1000.0}
    # 1000x larger loss b still gets a quarter of the gradient: its weight's share.
    torch.testing.assert_close(y.grad, (2.0 * (0.75 * g1 + 0.25 * g2)))


# --- codebooks --------------------------------------------------------------------------------


def test_ema_codebook_learns_clusters_and_restarts_dead_codes():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, 0.0], [0.0, -5.0]])
    codebook = EuclideanCodebook(2, 4)
    codebook.embed.copy_(torch.randn(4, 2, generator=gen))
    codebook.embed_avg.copy_(codebook.embed)
    codebook.cluster_size.fill_(1.0)
    settings = CodebookTraining(decay=0.8, dead_code_threshold=0.5)
    for _ in range(60):
        x = centres[torch.randint(4, (64,), generator=gen)] + 0.1 * torch.randn(
            64, 2, generator=gen
        )
        ema_update(codebook, x, codebook.encode(x), settings, gen)
    nearest = torch.cdist(centres, codebook.embed).min(dim=1).values
    assert (nearest < 0.3).all(), codebook.embed  # every centre has its entry
    # An entry nobody chooses is moved onto a latent of the batch.
    x = centres[:1].repeat(64, 1)
    codebook.embed[3] = torch.tensor([100.0, 100.0])
    codebook.cluster_size[3] = 0.0
    ema_update(codebook, x, codebook.encode(x), settings, gen)
    assert torch.cdist(codebook.embed[3:], x[:1]).item() < 1e-5


def test_trainable_codec_matches_inference_in_eval_mode(manifest):
    codec = TrainableCodec(TINY_MODEL)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4000, generator=gen) * 0.1
    codec.train()
    codec(x, 4, gen)  # k-means initialisation and one EMA step
    codec.eval()
    with torch.no_grad():
        step = codec(x, 2, gen)
        codes, _ = codec.model.encode(x, 2)
        audio = codec.model.decode(codes, None, x.shape[-1])
    assert torch.equal(step.codes, codes)
    torch.testing.assert_close(step.audio, audio)


def test_bf16_steps_follow_the_float32_gradient_and_leave_eval_alone():
    """``precision`` bf16: training steps run the encoder and decoder under bfloat16
    autocast; their gradient must point where float32's does, and eval stays float32."""
    torch.manual_seed(0)
    base = TrainableCodec(TINY_MODEL)
    x = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    base.data_init(x)
    base.train()
    base(x, 4, torch.Generator().manual_seed(0))  # k-means initialisation

    def step(autocast: torch.dtype | None, train: bool = True):
        codec = copy.deepcopy(base)  # a step moves the codebooks: each run from the same ones
        codec.autocast = autocast
        codec.train(train)
        dtypes = []
        first = codec.model.encoder.model[0]
        first.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
        out = codec(x, 4, torch.Generator().manual_seed(1))
        if not train:
            return out, dtypes, None
        (F.l1_loss(out.audio, x) + mel_distance(out.audio, x, RATE).mean()).backward()
        grad = torch.cat([p.grad.flatten() for p in codec.parameters() if p.grad is not None])
        return out, dtypes, grad

    _, full_dtypes, full_grad = step(None)
    half, half_dtypes, half_grad = step(torch.bfloat16)
    assert full_dtypes == [torch.float32] and half_dtypes == [torch.bfloat16]
    assert half.audio.dtype == torch.float32
    assert not torch.equal(full_grad, half_grad)
    assert F.cosine_similarity(full_grad, half_grad, dim=0) > 0.98
    with torch.no_grad():
        evaluated, eval_dtypes, _ = step(torch.bfloat16, train=False)
        reference, _, _ = step(None, train=False)
    assert eval_dtypes == [torch.float32] and torch.equal(evaluated.audio, reference.audio)
    config = TrainConfig.from_dict({"model": TINY_MODEL.to_dict(), "precision": "bf16"})
    assert config.autocast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        TrainConfig.from_dict({"model": TINY_MODEL.to_dict(), "precision": "fp16"})


def test_per_item_quantizer_dropout_decodes_each_item_from_its_codebooks():
    """DAC-style dropout: one batch, each item decoded with its own ``n_q``, as it is when the
    whole batch has that ``n_q``."""
    # Against the same batch, not the item alone: batch and single-item convolutions round
    # differently (1e-7), by the thread count too, and the tiny model's codebooks have near
    # ties (1.80025e-5 against 1.80027e-5 seen) that such rounding flips.
    torch.manual_seed(2)
    codec = TrainableCodec(TINY_MODEL, CodebookTraining(dropout=0.5))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 4000, generator=gen) * 0.1
    n_q = codec.draw_codebooks(4, gen)
    assert n_q.shape == (4,) and (n_q[2:] == TINY_MODEL.n_q).all()
    assert set(n_q[:2].tolist()) <= set(codec.bandwidth_codebooks())
    codec.train()
    codec(x, TINY_MODEL.n_q, gen)  # k-means initialisation of every codebook
    before = [layer._codebook.embed.clone() for layer in codec.model.quantizer.vq.layers]
    per_item = torch.tensor([1, 2, 4, 4])
    codec(x[:2], torch.tensor([1, 1]), gen)  # only the first codebook learns
    after = [layer._codebook.embed for layer in codec.model.quantizer.vq.layers]
    assert not torch.equal(before[0], after[0])
    assert all(torch.equal(b, a) for b, a in zip(before[1:], after[1:], strict=True))
    codec.eval()
    with torch.no_grad():
        step = codec(x, per_item, gen)
        for b, k in enumerate(per_item.tolist()):
            every = codec(x, k, gen)
            torch.testing.assert_close(step.audio[b], every.audio[b])
            assert torch.equal(step.codes[b, :k], every.codes[b, :k])
            assert (step.codes[b, k:] == -1).all()
    assert step.n_q == 2.75
    with pytest.raises(ValueError, match="dropout"):
        CodebookTraining(dropout=1.5)


def test_data_init_makes_the_output_depend_on_the_input():
    torch.manual_seed(0)
    codec = TrainableCodec(TINY_MODEL)
    x = (0.1 * torch.randn(2, 1, 4000)).requires_grad_()

    def sensitivity() -> float:
        y = codec.model.decoder(codec.model.encoder(x))
        (grad,) = torch.autograd.grad(y[0, 0, 2000], x)
        return float(grad.abs().max())

    before = sensitivity()
    codec.data_init(x.detach())
    with torch.no_grad():
        level = float(codec.model.decoder(codec.model.encoder(x)).std())
    assert sensitivity() > 100 * before
    assert abs(level / float(x.detach().std()) - 1) < 0.2


# --- the loop ---------------------------------------------------------------------------------


def test_training_raises_si_sdr(tmp_path, manifest):
    # The shipped recipe's losses (balancer; L1, multi-scale mel, adversarial, feature
    # matching) on tones: a short training must make the waveform come back, not only lower
    # a loss (a codec trained by the old, mel-dominated recipe lowered its loss and stayed
    # at -30 dB). Noise crops are left out: white noise can't be coded at 16 kbps.
    config = tiny_config(manifest, steps=40, log_every=20)
    data = dataclasses.replace(config.data, category_weights={"music": 1.0, "sfx": 0.0})
    trainer = Trainer(dataclasses.replace(config, data=data), tmp_path / "run")
    x = torch.cat([trainer.sampler.batch(10_000 + i) for i in range(3)])  # never trained on

    @torch.no_grad()
    def held_out_si_sdr() -> float:
        trainer.codec.eval()
        return float(si_sdr(trainer.codec(x, TINY_MODEL.n_q, trainer.generator).audio, x).mean())

    before = held_out_si_sdr()
    trainer.run()
    after = held_out_si_sdr()
    assert before < -10 and after > 5, (before, after)
    records = (tmp_path / "run" / LOG_NAME).read_text().splitlines()
    assert [json.loads(line)["step"] for line in records] == [20, 40]
    assert "discriminator" in json.loads(records[-1])


@pytest.mark.parametrize(("dropout", "ema_decay", "disc_view"), [(1.0, 0.0, 0), (0.5, 0.9, 1)])
def test_resume_is_exact(tmp_path, manifest, dropout, ema_decay, disc_view):
    codebooks = CodebookTraining(kmeans_iters=2, dropout=dropout)
    optim = dataclasses.replace(tiny_config(manifest).optim, ema_decay=ema_decay)
    # disc_view: the discriminator on one item's random window (drawn from the run's generator)
    losses = dataclasses.replace(
        tiny_config(manifest).losses, disc_items=disc_view, disc_seconds=0.1 * disc_view
    )
    config = tiny_config(manifest, steps=6, codebooks=codebooks, optim=optim, losses=losses)
    straight = Trainer(config, tmp_path / "a")
    straight.run()
    first = Trainer(config, tmp_path / "b")
    first.run(until=3)
    resumed = Trainer(config, tmp_path / "b")
    assert resumed.step == 3
    resumed.run()
    for name in ("codec", "disc") + (("averaged",) if ema_decay else ()):
        a = getattr(straight, name).state_dict()
        b = getattr(resumed, name).state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())
    assert straight.balancer.state_dict() == resumed.balancer.state_dict()
    logs = [(tmp_path / d / LOG_NAME).read_text().splitlines() for d in "ab"]
    strip = [
        [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in log]
        for log in logs
    ]
    assert strip[0] == strip[1]
    assert any("discriminator" in r for r in strip[0])  # the adversarial path was exercised


def test_discriminator_sees_its_share_of_the_batch_in_bf16(tmp_path, manifest):
    losses = dataclasses.replace(tiny_config(manifest).losses, disc_items=1, disc_seconds=0.1)
    trainer = Trainer(tiny_config(manifest, losses=losses, precision="bf16"), tmp_path / "run")
    seen = []
    for disc in trainer.disc.discriminators:
        disc.register_forward_hook(lambda _m, i, out: seen.append((i[0].shape, out[0].dtype)))
    metrics = trainer.train_step()
    window = round(0.1 * TINY_MODEL.sample_rate)
    assert seen and all(s == ((1, 1, window), torch.bfloat16) for s in seen)
    assert math.isfinite(metrics["adversarial"]) and math.isfinite(metrics["feature_matching"])
    with pytest.raises(ValueError, match="must be 0 or more"):
        LossConfig(disc_items=-1)


def test_averaged_weights_are_an_ema_of_the_weights(tmp_path, manifest):
    optim = dataclasses.replace(tiny_config(manifest).optim, ema_decay=0.75)
    trainer = Trainer(tiny_config(manifest, optim=optim), tmp_path / "run")
    assert torch.equal(  # before any step: the live weights
        nn.utils.parameters_to_vector(trainer.averaged_codec().parameters()),
        nn.utils.parameters_to_vector(trainer.codec.parameters()),
    )
    expected = None
    for _ in range(3):
        trainer.train_step()
        live = nn.utils.parameters_to_vector(trainer.codec.parameters()).detach().clone()
        expected = live if expected is None else 0.75 * expected + 0.25 * live
    averaged = trainer.averaged_codec()
    torch.testing.assert_close(nn.utils.parameters_to_vector(averaged.parameters()), expected)
    assert not torch.equal(expected, live)
    for mine, theirs in zip(averaged.buffers(), trainer.codec.buffers(), strict=True):
        assert torch.equal(mine, theirs)  # the live codebooks
    results = trainer.validate(averaged=True)
    assert results.keys() == trainer.validate().keys() and results != trainer.validate()
    with pytest.raises(ValueError, match="ema_decay"):
        Trainer(tiny_config(manifest), tmp_path / "other").validate(averaged=True)


def test_learning_rate_peaks_once_and_ends_at_the_floor():
    """The peak is used once (it was twice: the cosine started a step after it) and the last
    step is at ``min_lr_ratio`` (it stopped short); a compact-state resume ramps it again."""
    from types import SimpleNamespace

    optim = OptimConfig(lr=1.0, warmup_steps=3, min_lr_ratio=0.1, rewarm_steps=2)
    trainer = SimpleNamespace(config=SimpleNamespace(optim=optim, steps=8), rewarm_start=None)
    rates = [Trainer.learning_rate(trainer, step) for step in range(8)]
    expected = [1 / 3, 2 / 3, 1.0, 0.91406, 0.68906, 0.41094, 0.18594, 0.1]
    assert rates == pytest.approx(expected, abs=1e-5) and rates.count(1.0) == 1
    assert rates[-1] == pytest.approx(0.1, abs=1e-12)
    trainer.rewarm_start = 4
    assert Trainer.learning_rate(trainer, 4) == pytest.approx(expected[4] / 2, abs=1e-5)
    assert Trainer.learning_rate(trainer, 5) == pytest.approx(expected[5], abs=1e-5)


def test_resume_refuses_another_architecture(tmp_path, manifest):
    Trainer(tiny_config(manifest, steps=1), tmp_path / "run").run()
    other = tiny_config(manifest, model=dataclasses.replace(TINY_MODEL, n_filters=8))
    with pytest.raises(ValueError, match="does not fit this config"):
        Trainer(other, tmp_path / "run")


def test_validation_reports_each_category_and_bandwidth(tmp_path, manifest):
    trainer = Trainer(tiny_config(manifest), tmp_path / "run")
    results = trainer.validate()
    assert set(results) == {f"{b:g}kbps/speech" for b in (4, 8, 16)}
    assert all(np.isfinite(v["si_sdr"]) and v["mel_distance"] > 0 for v in results.values())


def test_export_loads_as_a_codec_with_priors(tmp_path, manifest):
    trainer = Trainer(tiny_config(manifest, steps=3), tmp_path / "run")
    trainer.run()
    card = export_codec(
        tmp_path / "run" / CHECKPOINT_NAME,
        tmp_path / "out" / "mini.json",
        name="mini",
        prior_batches=2,
    )
    info = json.loads(card.read_text())
    assert info["inference_only"] and info["training"]["steps"] == 3
    assert set(info["training_data"]) == {"tones", "noise"}  # never the held-out source
    codec = audiotok.load_codec(str(card))
    assert codec.model_id == "mini" and codec.entropy_priors.shape == (4, 16)
    # The bandwidth nearest 6 kbps: 6 was written whatever the recipe's bandwidths.
    assert info["default_bandwidth"] == codec.default_bandwidth == 4.0
    # The export is the float16-rounded model: codes equal the trained model's on those weights.
    model = trainer.codec.model
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    x = torch.randn(1, 1, 4000) * 0.1
    with torch.no_grad():
        assert torch.equal(codec.encode(x, RATE, 16.0).codes, model.encode(x, 4)[0])


# --- CLI --------------------------------------------------------------------------------------


def test_cli_trains_resumes_and_exports(tmp_path, manifest):
    config_path = tmp_path / "tiny.json"
    data = tiny_config(manifest, steps=4).to_dict()
    config_path.write_text(json.dumps(data))
    run = CliRunner().invoke
    result = run(cli, ["train", str(config_path), "-o", str(tmp_path / "run"), "--until", "2"])
    assert result.exit_code == 0, result.output
    assert "step 2 of 4" in result.output
    result = run(cli, ["train", str(config_path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0 and "resuming" in result.output and "step 4 of 4" in result.output
    card = tmp_path / "m.json"
    args = ["export-model", str(tmp_path / "run"), str(card), "--prior-batches", "1"]
    assert run(cli, args).exit_code == 0
    again = run(cli, args)
    assert again.exit_code == 1 and "exists" in again.output


def test_cli_unusable_device_is_one_line(tmp_path, manifest):
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(tiny_config(manifest).to_dict()))
    args = ["train", str(config_path), "-o", str(tmp_path / "run"), "--device", "nonsense"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "invalid device 'nonsense'" in result.output
    assert not (tmp_path / "run").exists()


def test_cli_unreadable_training_audio_is_one_line(tmp_path, manifest):
    damaged = manifest.parent / "tones" / "0.flac"
    damaged.write_bytes(b"not audio at all")
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(tiny_config(manifest).to_dict()))
    result = CliRunner().invoke(cli, ["train", str(config_path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"audiotok: error: {damaged}: not readable")


def test_cli_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"sample_rate": 24000}}')
    result = CliRunner().invoke(cli, ["train", str(bad), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiotok: error:")
