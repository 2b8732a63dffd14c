"""Training in slices: the compressed subset, crops from memory, compact state, history, CLI.

Tiny model and synthetic audio, as tests/test_train.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file
from test_train import RATE, tiny_config, write_manifest

from audiotok.cli.main import cli
from audiotok.train.clipbank import ClipBank
from audiotok.train.config import DataConfig, apply_override, load_config
from audiotok.train.data import CropSampler, read_manifest, split_by_source
from audiotok.train.slices import (
    HISTORY_NAME,
    STATE_NAME,
    load_compact_state,
    run_slice,
    save_compact_state,
)
from audiotok.train.state import META_KEY
from audiotok.train.subset import SubsetPlan, make_subset
from audiotok.train.trainer import Trainer, check_same_model

RECIPE = "configs/audiotok_24khz.json"

PLAN = SubsetPlan({"music": 1.5, "sfx": 1.0}, snippet=0.5)


@pytest.fixture
def subset(tmp_path):
    manifest = write_manifest(tmp_path / "audio")
    data = DataConfig(validation_sources=("held",), segment=0.25, validation_items=4)
    make_subset(read_manifest(manifest), tmp_path / "subset", data, RATE, seed=0, plan=PLAN)
    return tmp_path / "subset"


def subset_config(subset, **changes):
    config = tiny_config(subset.parent / "audio" / "manifest.tsv", **changes)
    data = config.data.__class__(**{**config.data.__dict__, "subset": str(subset)})
    return config.__class__(**{**config.__dict__, "data": data})


def test_subset_holds_snippets_and_validation(subset):
    info = json.loads((subset / "subset.json").read_text())
    assert set(info["categories"]) == {"music", "sfx"}  # the held-out source is not in it
    for category, seconds in PLAN.seconds.items():
        entry = info["categories"][category]
        assert entry["samples"] >= seconds * RATE
        assert all(s["source"] != "held" for s in entry["snippets"])
        assert (subset / entry["file"]).stat().st_size > 0
    assert info["validation"]["categories"] == ["speech"] * 4


def test_subset_is_deterministic(tmp_path, subset):
    manifest = read_manifest(subset.parent / "audio" / "manifest.tsv")
    data = DataConfig(validation_sources=("held",), segment=0.25, validation_items=4)
    make_subset(manifest, tmp_path / "again", data, RATE, seed=0, plan=PLAN)
    for name in ("subset.json", "validation.flac"):
        assert (subset / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for name in ("music.opus", "sfx.opus"):  # the Ogg stream serial number is random
        a, b = sf.read(subset / name)[0], sf.read(tmp_path / "again" / name)[0]
        assert a.size and (a == b).all(), name


def test_clipbank_batches_are_a_function_of_seed_and_step(subset):
    config = DataConfig(segment=0.25, batch_size=3)
    a, b = ClipBank(subset, config, RATE, seed=1), ClipBank(subset, config, RATE, seed=1)
    assert a.batch(5).shape == (3, 1, 4000)
    assert torch.equal(a.batch(5), b.batch(5))
    assert not torch.equal(a.batch(5), a.batch(6))
    rms_db = 20 * torch.log10(a.batch(7).square().mean(dim=-1).sqrt())
    assert ((rms_db > -20 - 6.5) & (rms_db < -20 + 6.5)).all()
    crops, categories = a.fixed_set(2)
    assert crops.shape == (2, 1, 4000) and categories == ["speech", "speech"]


def two_samplers(subset, source: str, **change):
    """Batches of 64 crops from the subset (``clipbank``) or the files (``crops``), as drawn
    and with ``change`` to the data config."""
    config = DataConfig(segment=0.25, batch_size=64, validation_sources=("held",))
    configs = (config, dataclasses.replace(config, **change))
    if source == "clipbank":
        return tuple(ClipBank(subset, c, RATE, seed=1) for c in configs)
    train, _ = split_by_source(read_manifest(subset.parent / "audio" / "manifest.tsv"), ("held",))
    return tuple(CropSampler(train, c, RATE, seed=1) for c in configs)


@pytest.mark.parametrize("source", ["clipbank", "crops"])
def test_silence_spans_teach_digital_silence_and_leave_the_rest(subset, source):
    plain, silenced = two_samplers(subset, source, silence=0.5)
    a, b = plain.batch(3), silenced.batch(3)
    assert torch.equal(silenced.batch(3), b)  # a function of (seed, step), as every batch
    changed = (a != b).any(dim=-1).flatten()
    assert 16 < int(changed.sum()) < 48  # about half the crops
    fade = round(0.005 * RATE)
    for crop, original in zip(b[changed, 0], a[changed, 0], strict=True):
        zero = torch.nonzero(crop != original).flatten()
        span = int(zero[-1] - zero[0]) + 1  # one span: where the crop differs from its source
        assert 0.1 * 4000 - 2 <= span <= 0.5 * 4000 + 2
        assert (crop[zero[0] + fade : zero[-1] - fade + 1] == 0).all()  # silent between fades
        assert (
            crop[zero[0] : zero[0] + fade].abs() <= original[zero[0] : zero[0] + fade].abs()
        ).all()
    assert torch.equal(a[~changed], b[~changed])


@pytest.mark.parametrize("source", ["clipbank", "crops"])
def test_band_limits_empty_the_band_above_a_cutoff(subset, source):
    plain, filtered = two_samplers(subset, source, lowpass=1.0)
    a, b = plain.batch(3), filtered.batch(3)
    assert torch.equal(filtered.batch(3), b)
    # At 16 kHz only the 4 kHz cutoff is below Nyquist: about a quarter of the crops change.
    changed = (a != b).any(dim=-1).flatten()
    assert 6 < int(changed.sum()) < 28
    freqs = torch.fft.rfftfreq(a.shape[-1], 1 / RATE)
    before, after = (torch.fft.rfft(v[changed, 0].double()).abs() for v in (a, b))
    # Empty to float32 rounding: 120 dB below the strongest bin.
    assert (after[:, freqs > 4000] < 1e-6 * before.amax(dim=-1, keepdim=True)).all()
    torch.testing.assert_close(after[:, freqs < 3800], before[:, freqs < 3800], rtol=0, atol=1e-5)
    assert torch.equal(a[~changed], b[~changed])


def test_clipbank_refuses_another_rate(subset):
    with pytest.raises(ValueError, match="subset at 16000 Hz, model at 24000 Hz"):
        ClipBank(subset, DataConfig(), 24_000, seed=0)


def test_compact_state_resumes_weights_codebooks_and_counters(tmp_path, subset):
    config = subset_config(subset, steps=100)
    first = Trainer(config, tmp_path / "a")
    first.run(until=6)
    save_compact_state(first, tmp_path / "state.safetensors")
    second = Trainer(config, tmp_path / "b")
    load_compact_state(second, tmp_path / "state.safetensors")
    assert second.step == 6 and second.rewarm_start == 6
    assert second.totals == first.totals
    assert torch.equal(second.generator.get_state(), first.generator.get_state())
    for key, value in first.codec.state_dict().items():
        # float16 storage: equal to within its rounding (EMA sums rebuilt from entries * usage)
        torch.testing.assert_close(second.codec.state_dict()[key], value, rtol=2e-3, atol=1e-3)
    assert second.learning_rate(6) < second.learning_rate(6 + config.optim.rewarm_steps)
    second.run(until=8)  # trains on from there
    assert second.step == 8


def test_a_newer_state_over_an_older_run_directory_trains_as_in_a_fresh_one(tmp_path, subset):
    """The run directory's checkpoint (step 3) holds Adam moments of other weights: a state of
    step 6 loaded over it must start them afresh, as it does in a new directory."""
    config = subset_config(subset, steps=100)
    state = tmp_path / "training"
    run_slice(Trainer(config, tmp_path / "stale"), None, seconds=None, until=3)
    run_slice(Trainer(config, tmp_path / "other"), state, seconds=None, until=6)
    shutil.copytree(state, tmp_path / "training-copy")
    stale = Trainer(config, tmp_path / "stale")
    fresh = Trainer(config, tmp_path / "fresh")
    run_slice(stale, state, seconds=None, until=8)
    run_slice(fresh, tmp_path / "training-copy", seconds=None, until=8)
    for key, value in fresh.codec.state_dict().items():
        assert torch.equal(stale.codec.state_dict()[key], value), key


def test_averaged_weights_travel_in_the_state_and_export(tmp_path, subset):
    from audiotok.train.export import export_codec

    config = subset_config(subset, steps=100)
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, ema_decay=0.5))
    state = tmp_path / "training"
    first = Trainer(config, tmp_path / "a")
    record = run_slice(first, state, seconds=None, until=4)
    assert record["validation_averaged"].keys() == record["validation"].keys()
    assert record["validation_averaged"] != record["validation"]
    second = Trainer(config, tmp_path / "b")
    load_compact_state(second, state / STATE_NAME)
    assert int(second.averaged.n_averaged) == 4
    mine, theirs = second.averaged_codec(), first.averaged_codec()
    for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b.half().float(), rtol=0, atol=0)
    manifest = str(subset.parent / "audio" / "manifest.tsv")
    options = {"name": "m", "manifest": manifest, "prior_batches": 1, "averaged": True}
    card = export_codec(state / STATE_NAME, tmp_path / "m.json", **options)
    info = json.loads(card.read_text())
    assert info["training"]["weights"] == "averaged"
    assert info["training"]["validation"]["validation"] == record["validation_averaged"]
    exported = load_file(str(card.with_suffix(".safetensors")))
    averaged = dict(first.averaged_codec().model.named_parameters())
    key = "encoder.model.0.conv.conv.weight_v"
    torch.testing.assert_close(exported[key].float(), averaged[key].half().float())
    plain = subset_config(subset, steps=100)
    run_slice(Trainer(plain, tmp_path / "c"), tmp_path / "plain", seconds=None, until=1)
    with pytest.raises(ValueError, match="no averaged weights"):
        export_codec(tmp_path / "plain" / STATE_NAME, tmp_path / "n.json", **options)


def test_committed_state_resumes_under_the_recipe():
    # What the background and GPU slices start from; a model field added since the state was
    # saved (as `model.activation`) must not stop them.
    root = Path(__file__).resolve().parents[1]
    with safe_open(root / "training" / STATE_NAME, "pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
    check_same_model(meta["config"]["model"], load_config(root / RECIPE).model)


def test_the_recipes_compact_state_fits_a_repository_file(tmp_path, subset):
    # The state is committed and replaced in place: at most 16 MiB a file (the GPU slice
    # brings it back as one). The recipe's model with its averaged weights, at the subset's
    # rate (the same parameters).
    recipe = load_config(Path(__file__).resolve().parents[1] / RECIPE)
    model = dataclasses.replace(recipe.model, sample_rate=RATE)
    config = dataclasses.replace(subset_config(subset), model=model, optim=recipe.optim)
    assert config.optim.ema_decay > 0
    trainer = Trainer(config, tmp_path / "run")
    trainer.averaged.update_parameters(trainer.codec)
    save_compact_state(trainer, tmp_path / STATE_NAME)
    assert (tmp_path / STATE_NAME).stat().st_size <= 16 * 2**20
    committed = Path(__file__).resolve().parents[1] / "training"
    assert sum(f.stat().st_size for f in committed.glob("*.safetensors")) <= 32 * 2**20


def test_state_from_before_a_model_field_was_added_resumes(tmp_path, subset):
    # A state saved before `model.activation` existed resumes (at the field's default); a
    # state of another architecture, or of a newer version, does not.
    trainer = Trainer(subset_config(subset), tmp_path / "run")
    meta = trainer.meta()
    del meta["config"]["model"]["activation"]
    trainer.restore_meta(meta)
    meta["config"]["model"]["activation"] = "Snake"
    with pytest.raises(ValueError, match="another model config"):
        trainer.restore_meta(meta)
    meta["config"]["model"]["future_field"] = 1
    with pytest.raises(ValueError, match=r"not one this version reads.*future_field"):
        trainer.restore_meta(meta)


def test_run_slice_time_box_state_and_history(tmp_path, subset):
    config = subset_config(subset, steps=1000)
    state = tmp_path / "training"
    record = run_slice(Trainer(config, tmp_path / "run1"), state, seconds=0.0, until=3)
    assert record["steps"] == [0, 0]  # a zero time box trains nothing, yet saves and records
    record = run_slice(Trainer(config, tmp_path / "run1"), state, seconds=None, until=3)
    assert record["steps"] == [0, 3] and record["audio_seconds"] == 3 * 2 * 0.25
    from audiotok.train.export import last_validation

    # The run's log has it too: export-model of a run directory trained without --state.
    found = last_validation(tmp_path / "run1", 3)
    assert found is not None and found["validation"] == record["validation"]
    assert set(record["validation"]) == {f"{b:g}kbps/speech" for b in (4.0, 8.0, 16.0)}
    # Another machine: a new run directory picks up the compact state where it stopped.
    record = run_slice(Trainer(config, tmp_path / "elsewhere"), state, seconds=None, until=5)
    assert record["steps"] == [3, 5]
    assert record["totals"]["audio_seconds"] == 5 * 2 * 0.25
    lines = (state / HISTORY_NAME).read_text().splitlines()
    assert [json.loads(line)["steps"] for line in lines] == [[0, 0], [0, 3], [3, 5]]
    # The run directory that is further along than the state is resumed as it is.
    run_slice(Trainer(config, tmp_path / "elsewhere"), None, seconds=None, until=7)
    record = run_slice(Trainer(config, tmp_path / "elsewhere"), state, seconds=None, until=8)
    assert record["steps"] == [7, 8]


def test_stop_request_ends_after_the_step_with_a_checkpoint(tmp_path, subset):
    trainer = Trainer(subset_config(subset), tmp_path / "run")
    trainer.stop_requested = True
    trainer.run()
    assert trainer.step == 0 and trainer.checkpoint_path.is_file()


def test_config_overrides(tmp_path, subset):
    data: dict = {"losses": {"l1": 1.0}}
    apply_override(data, "losses.adversarial_start=2000")
    apply_override(data, "data.subset=some/where")
    assert data == {
        "losses": {"l1": 1.0, "adversarial_start": 2000},
        "data": {"subset": "some/where"},
    }
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        apply_override(data, "losses.l1")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(subset_config(subset).to_dict()))
    assert load_config(path, ("optim.lr=0.5",)).optim.lr == 0.5
    with pytest.raises(ValueError, match="optim: unknown fields lr2"):
        load_config(path, ("optim.lr2=0.5",))
    for override, message in [  # each failed deep inside torch or numpy, or trained NaNs
        ("optim.lr=abc", "optim.lr: expected a finite number, not 'abc'"),
        ("data.batch_size=1.5", "data.batch_size: expected an integer, not 1.5"),
        ("data.segment=Infinity", "data.segment: expected a finite number, not inf"),
        ("losses.disc_update_prob=NaN", "losses.disc_update_prob: expected a finite number"),
        ("data.category_weights=3", "data.category_weights: expected a mapping to finite"),
        ("optim.betas=[0.5]", "optim.betas must be two numbers in [0, 1)"),
        ("losses.mel_fft_range=[11,6]", "losses.mel_fft_range must be (start, end)"),
        ("model.n_q=0", "model.n_q must be >= 1"),
        ("log_every=0", "log_every and checkpoint_every must be >= 1"),
        ("threads=-1", "threads must be >= 0"),
        ("data.validation_items=0", "data.batch_size and data.validation_items must be >= 1"),
    ]:
        with pytest.raises(ValueError) as refused:
            load_config(path, (override,))
        assert message in str(refused.value), override


def test_cli_slices_with_state_and_subset(tmp_path, subset):
    path = tmp_path / "c.json"
    data = subset_config(subset, steps=1000).to_dict()
    data["data"]["manifest"] = ""
    path.write_text(json.dumps(data))
    runner = CliRunner()
    args = ["train", str(path), "--subset", str(subset), "--state", str(tmp_path / "training")]
    result = runner.invoke(cli, [*args, "-o", str(tmp_path / "r1"), "--until", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        [*args, "-o", str(tmp_path / "r2"), "--until", "4", "--set", "optim.lr=0.001",
         "--precision", "bf16"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "training from step 2\n" in result.output  # what training/cpu_slice.sh waits for
    assert (tmp_path / "training" / STATE_NAME).is_file()
    lines = [json.loads(x) for x in (tmp_path / "training" / HISTORY_NAME).read_text().splitlines()]
    assert [x["steps"] for x in lines] == [[0, 2], [2, 4]]
    assert lines[1]["note"] == f"--set optim.lr=0.001 --subset {subset} --precision bf16"
    assert json.loads((tmp_path / "r2" / "config.json").read_text())["precision"] == "bf16"
    result = runner.invoke(cli, [*args, "-o", str(tmp_path / "r3"), "--set", "optim.nope=1"])
    assert result.exit_code == 1 and "unknown fields nope" in result.output


def test_a_hangup_stops_with_everything_saved_and_its_status(tmp_path, subset):
    """The terminal closed (SIGHUP) saves as SIGTERM does; the status says it was stopped, so
    that ``train && export-model`` goes no further. --manifest replaces the recipe's subset."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "c.json"
    path.write_text(json.dumps(subset_config(subset, steps=100_000).to_dict()))
    command = [sys.executable, "-m", "audiotok", "train", str(path), "-o", str(tmp_path / "r"),
               "--state", str(tmp_path / "training")]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.startswith("step ") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGHUP)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGHUP, rest
    assert "SIGHUP: stopping after this step" in rest
    assert (tmp_path / "r" / "checkpoint.safetensors").is_file()
    assert (tmp_path / "training" / STATE_NAME).is_file()
    manifest = str(subset.parent / "audio" / "manifest.tsv")
    runner = CliRunner()
    args = ["train", str(path), "-o", str(tmp_path / "m"), "--manifest", manifest, "--until", "1"]
    assert runner.invoke(cli, args).exit_code == 0
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["data"]
    assert saved["manifest"] == manifest and saved["subset"] == ""


def test_export_follows_the_chain_of_slices_not_ablations(tmp_path):
    from audiotok.train.export import compute_spent, history_chain, last_validation

    def line(first, last, machine, sdr):
        return json.dumps({"steps": [first, last], "machine": machine, "train_seconds": 10.0,
                           "audio_seconds": 100.0, "validation": {"6kbps/music": sdr}})  # fmt: skip

    lines = [
        line(0, 90, "gpu", 1.0),  # ablation, not continued
        line(0, 100, "gpu", 2.0),
        line(100, 150, "cpu", 3.0),
        line(100, 149, "cpu", 9.0),  # ablation from the same state, ends just before
    ]
    (tmp_path / HISTORY_NAME).write_text("\n".join(lines) + "\n")
    assert [r["steps"] for r in history_chain(tmp_path, 150)] == [[100, 150], [0, 100]]
    assert last_validation(tmp_path, 150) == {"step": 150, "validation": {"6kbps/music": 3.0}}
    assert compute_spent(tmp_path, 150) == {
        "cpu": {"train_seconds": 10.0, "audio_seconds": 100.0},
        "gpu": {"train_seconds": 10.0, "audio_seconds": 100.0},
    }
