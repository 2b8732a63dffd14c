"""Fine-tuning MusicGen / AudioGen (``audiotok finetune``) on tiny random models.

The models come from ``generate_reference`` (transformers' MusicGen with random weights, in
audiocraft's and transformers' formats); the data is made here: short clips of one "style"
(a gated two-tone chord), captioned by sidecar files and encoded with the model's own codec
by ``audiotok encode``. Held-out clips of the same style are a second dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner
from generate_reference import (
    CARD,
    N_Q,
    audiocraft_cross_attention,
    save_audiocraft,
    save_hf,
    tiny_musicgen,
    tiny_tokenizer,
)
from safetensors.torch import load_file

from audiotok.cli.main import cli
from audiotok.dataset import TokenDataset
from audiotok.finetune.config import FinetuneConfig
from audiotok.finetune.export import audiocraft_yaml, full_state, write_audiocraft_codec
from audiotok.finetune.loop import FinetuneRun
from audiotok.finetune.lora import load_adapter
from audiotok.finetune.loss import compute_predictions, cross_entropy_sums, lm_loss, text_conditions
from audiotok.generate import AudioGen, MusicGen, load_lm
from audiotok.generate.generation import pattern_provider
from audiotok.generate.load import read_lm_checkpoint
from audiotok.zoo.lm_checkpoints import config_from_audiocraft

pytest.importorskip("transformers")

CAPTION = "calm piano song"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the models are tiny, and a second thread only waits for the first
    (much slower when the other core is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def style_clip(seed: int, rate: int, seconds: float = 1.0) -> np.ndarray:
    """The training style: a chord gated at 4 Hz, its phase and noise drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    gate = (np.sin(2 * np.pi * 4 * t) > 0).astype(float)
    chord = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(
        2 * np.pi * 660 * t + rng.uniform(0, 6)
    )
    return (gate * chord + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def encode_clips(folder: Path, out: Path, codec: Path, seeds, rate: int, caption=CAPTION):
    """Writes clips (with ``.txt`` captions unless None) and encodes them into ``out``."""
    folder.mkdir(parents=True)
    for seed in seeds:
        sf.write(folder / f"clip{seed}.wav", style_clip(seed, rate), rate)
        if caption is not None:
            (folder / f"clip{seed}.txt").write_text(caption + "\n")
    result = run_cli("encode", folder, "-o", out, "-m", codec)
    assert result.exit_code == 0, result.output
    return out


def as_audiogen(directory: Path) -> None:
    """Turns a tiny audiocraft export into a 16 kHz model (AudioGen's rate), both files."""
    for name in ("state_dict.bin", "compression_state_dict.bin"):
        pkg = torch.load(directory / name, weights_only=True)
        pkg["xp.cfg"] = pkg["xp.cfg"].replace("sample_rate: 32000", "sample_rate: 16000")
        torch.save(pkg, directory / name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    model = tiny_musicgen(seed=0)
    export, t5 = save_audiocraft(model, root / "musicgen")
    codec = export / "compression_state_dict.bin"
    audiogen, _ = save_audiocraft(model, root / "audiogen")
    as_audiogen(audiogen)
    return {
        "root": root,
        "hf_model": model,
        "hf": save_hf(model, root / "hf"),
        "export": export,
        "t5": t5,
        "train": encode_clips(root / "a_train", root / "train", codec, range(8), 32_000),
        "valid": encode_clips(root / "a_valid", root / "valid", codec, range(100, 103), 32_000),
        "audiogen": audiogen,
        "ag_train": encode_clips(
            root / "g_train", root / "ag_train", audiogen / "compression_state_dict.bin",
            range(8), 16_000,
        ),
        "ag_valid": encode_clips(
            root / "g_valid", root / "ag_valid", audiogen / "compression_state_dict.bin",
            range(100, 103), 16_000,
        ),
    }  # fmt: skip


def recipe(world, **changes) -> dict:
    data = {"train": str(world["train"]), "valid": str(world["valid"]),
            "segment_seconds": 0.5, "batch_size": 4}  # fmt: skip
    out = {
        "base": str(world["export"]), "text_encoder": str(world["t5"]), "data": data,
        "optim": {"lr": 3e-3, "warmup_steps": 2}, "steps": 30, "precision": "fp32",
        "log_every": 1, "valid_every": 1000, "checkpoint_every": 1000,
    }  # fmt: skip
    for key, value in changes.items():
        if isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(world):
    """A full fine-tune of the tiny MusicGen through the CLI, finished and exported."""
    path = world["root"] / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(world)))
    run_dir = world["root"] / "run"
    result = run_cli("finetune", path, "-o", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


# --- data -----------------------------------------------------------------------------------


def test_encode_keeps_captions_from_sidecars_and_manifest(world, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"f{i}.wav", style_clip(i, 32_000, 0.2), 32_000)
    (folder / "f0.json").write_text(json.dumps({"description": "lo fi beat", "bpm": 90}))
    (folder / "f1.txt").write_text("rock song with guitar\n")
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\tdescription\naudio/f2.wav\tcalm piano\n")
    codec = world["export"] / "compression_state_dict.bin"
    out = tmp_path / "tokens"
    result = run_cli("encode", folder / "f0.wav", folder / "f1.wav", "--manifest", manifest,
                     "-o", out, "-m", codec)  # fmt: skip
    assert result.exit_code == 0, result.output
    ds = TokenDataset(out)
    captions = {Path(ds.record(i)["path"]).name: ds.record(i)["description"] for i in range(3)}
    assert captions == {"f0.wav": "lo fi beat", "f1.wav": "rock song with guitar",
                        "f2.wav": "calm piano"}  # fmt: skip


# --- the objective --------------------------------------------------------------------------


def test_loss_equals_transformers_loss_with_labels(world):
    """Our loss (audiocraft's formulation) against transformers' MusicGen given ``labels``:
    the delayed codes cut to T steps, padding and delayed places -100."""
    model = world["hf_model"]
    lm, conditioner, _, config = load_lm(world["hf"])
    texts = ["lo fi beat with drums", "calm piano"]  # unequal lengths: padded text too
    gen = torch.Generator().manual_seed(3)
    batch, frames, valid = 2, 20, [20, 13]
    codes = torch.randint(0, CARD, (batch, N_Q, frames), generator=gen)
    mask = torch.zeros(codes.shape, dtype=torch.bool)
    labels = torch.full((batch, frames, N_Q), -100)
    for b in range(batch):
        codes[b, :, valid[b] :] = CARD  # padding is the special token, as audiocraft pads
        mask[b, :, : valid[b]] = True
        for k in range(N_Q):  # delay pattern: codebook k at step t + k
            for t in range(valid[b]):
                if t + k < frames:
                    labels[b, t + k, k] = codes[b, k, t]
    with torch.no_grad():
        ours, per = lm_loss(
            lm, pattern_provider(config), codes, mask, text_conditions(conditioner, texts)
        )
        inputs = tiny_tokenizer()(texts, return_tensors="pt", padding=True)
        if getattr(model.config.decoder, "decoder_start_token_id", None) is None:
            model.config.decoder.decoder_start_token_id = CARD  # as the official configs
        with audiocraft_cross_attention(model):
            theirs = model(
                input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, labels=labels
            ).loss
    assert per.shape == (N_Q,)
    assert torch.isclose(ours, theirs, rtol=1e-5, atol=1e-5), (float(ours), float(theirs))


# --- training -------------------------------------------------------------------------------


def test_validation_loss_falls_and_held_out_likelihood_rises(world, trained):
    lines = log_lines(trained)
    valid = [line["valid"] for line in lines if "valid" in line]
    assert valid[0]["step"] == 0 and valid[-1]["step"] == 30
    assert valid[-1]["loss"] < 0.7 * valid[0]["loss"], (valid[0], valid[-1])
    assert all(len(v["per_codebook"]) == N_Q for v in valid)
    steps = [line for line in lines if "step" in line]
    assert [s["step"] for s in steps] == list(range(1, 31))

    # Held-out clips of the style: mean log-likelihood per token, base vs the export.
    def nll(source, **kwargs) -> float:
        lm, conditioner, _, config = load_lm(source, **kwargs)
        ds = TokenDataset(world["valid"])
        codes = torch.cat([ds[i].codes[:, :N_Q] for i in range(len(ds))])
        with torch.no_grad():
            cond = text_conditions(conditioner, [CAPTION] * len(codes))
            logits, mask = compute_predictions(lm, pattern_provider(config), codes, cond)
            sums, counts = cross_entropy_sums(logits, codes, mask[None].expand_as(codes))
        return float(sums.sum() / counts.sum())

    base = nll(world["export"], text_encoder=world["t5"])
    tuned = nll(trained / "export" / "audiotok")
    assert tuned < base - 1.0, (base, tuned)


@pytest.mark.parametrize(
    "changes",
    [
        {"data": {"accumulate": 2}, "cfg_dropout": 0.5},
        {"lora": {"rank": 4, "dropout": 0.1}, "train_layers": ["linears"], "optim": {"lr": 1e-2}},
    ],
    ids=["full", "lora"],
)
def test_resume_is_exact(world, tmp_path, changes):
    config = FinetuneConfig.from_dict(recipe(world, steps=6, **changes))
    straight = FinetuneRun(config, tmp_path / "straight")
    straight.run()
    split = FinetuneRun(config, tmp_path / "split")
    split.run(until=3)
    assert split.step == 3
    resumed = FinetuneRun(config, tmp_path / "split")
    assert resumed.step == 3
    resumed.run()
    a = load_file(tmp_path / "straight" / "checkpoint.safetensors")
    b = load_file(tmp_path / "split" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]

    def losses(run_dir):
        return {s["step"]: s["loss"] for s in log_lines(run_dir) if "loss" in s}

    assert losses(tmp_path / "straight") == losses(tmp_path / "split")
    assert straight.validate() == resumed.validate()


# --- export ---------------------------------------------------------------------------------


def test_exports_load_and_generate(world, trained, tmp_path):
    export = trained / "export"
    ours = read_lm_checkpoint(export / "audiotok")
    theirs = read_lm_checkpoint(export / "audiocraft")
    assert ours.format == "audiotok" and theirs.format == "audiocraft"
    assert ours.config == theirs.config
    # The audiocraft file: plain containers, readable without unpickling code.
    pkg = torch.load(export / "audiocraft" / "state_dict.bin", weights_only=True)
    assert pkg["exported"] is True and isinstance(pkg["xp.cfg"], str)
    assert ours.lm_state.keys() == theirs.lm_state.keys()
    assert all(torch.equal(ours.lm_state[k], theirs.lm_state[k]) for k in ours.lm_state)
    for name, state in ours.conditioner_states.items():
        assert all(torch.equal(v, theirs.conditioner_states[name][k]) for k, v in state.items())
    checkpoint = load_file(trained / "checkpoint.safetensors")
    trained_head = checkpoint["param.lm.linears.0.weight"]
    assert torch.equal(ours.lm_state["linears.0.weight"], trained_head)

    # Both load and generate the same greedy tokens.
    a = MusicGen.get_pretrained(export / "audiotok", device="cpu")
    b = MusicGen.get_pretrained(export / "audiocraft", device="cpu", text_encoder=world["t5"])
    for model in (a, b):
        model.set_generation_params(use_sampling=False, duration=0.3)
    wav, codes = a.generate([CAPTION], return_tokens=True)
    assert wav.shape == (1, 1, int(0.3 * 50) * 640) and codes.shape == (1, N_Q, 15)
    assert torch.equal(b.generate([CAPTION], return_tokens=True)[1], codes)
    out = tmp_path / "out.wav"
    result = run_cli("generate", CAPTION, "-m", export / "audiotok", "-d", "0.3", "-o", out)
    assert result.exit_code == 0, result.output
    assert sf.info(out).frames == int(0.3 * 50) * 640
    # The export's codec decodes its tokens, the folder named as for generate.
    tokens = tmp_path / "out.npz"
    result = run_cli("generate", CAPTION, "-m", export / "audiotok", "-d", "0.3",
                     "-o", tmp_path / "again.wav", "--tokens", tokens)  # fmt: skip
    assert result.exit_code == 0, result.output
    decoded = run_cli("decode", tokens, "-m", export / "audiotok", "-o", tmp_path / "dec.wav")
    assert decoded.exit_code == 0, decoded.output
    assert sf.info(tmp_path / "dec.wav").frames == int(0.3 * 50) * 640


def test_generated_audiocraft_config_reads_back(world):
    """A base that was not an audiocraft export gets an xp.cfg generated from its config."""
    loaded = load_lm(world["hf"])
    state = full_state(loaded.lm, loaded.conditioner)
    raw = yaml.safe_load(audiocraft_yaml(loaded.config))
    assert config_from_audiocraft(raw, state) == loaded.config


def test_lora_merged_equals_unmerged_and_adapter_apart(world, tmp_path):
    """The adapters kept apart, applied to the base, are the model the run trained: with the
    text projections (trained by default) and the ``train_layers`` weights beside them."""
    from audiotok.finetune.config import FinetuneError

    config = FinetuneConfig.from_dict(
        recipe(world, steps=8, lora={"rank": 4}, optim={"lr": 2e-2}, train_layers=["linears"])
    )
    run = FinetuneRun(config, tmp_path / "lora")
    assert run.trainable < 0.2 * sum(p.numel() for p in run.lm.parameters())
    run.run()
    from audiotok.finetune.export import export_run

    export = export_run(run)
    batch = run.data.validation()[0]
    pattern = pattern_provider(run.lm_config).get_pattern(batch.codes.shape[-1])
    seq, _ = pattern.build_sequence(batch.codes, CARD)

    def logits(lm, conditioner):
        with torch.no_grad():
            return lm.eval()(seq, text_conditions(conditioner, batch.texts))

    unmerged = logits(run.lm, run.conditioner)
    merged = load_lm(export / "audiotok")
    base = load_lm(world["export"], text_encoder=world["t5"])
    assert not torch.allclose(logits(base.lm, base.conditioner), unmerged, atol=1e-3)
    torch.testing.assert_close(logits(merged.lm, merged.conditioner), unmerged, atol=1e-5, rtol=0)
    with pytest.raises(FinetuneError, match="pass the conditioner too"):
        load_adapter(base.lm, export / "lora")  # the projections would be left out
    load_adapter(base.lm, export / "lora", base.conditioner)  # kept apart: on the base again
    merged_logits = logits(merged.lm, merged.conditioner)
    torch.testing.assert_close(logits(base.lm, base.conditioner), merged_logits, atol=1e-5, rtol=0)


def test_audiogen_fine_tunes_exports_and_generates(world, tmp_path):
    data = {"train": str(world["ag_train"]), "valid": str(world["ag_valid"])}
    config = FinetuneConfig.from_dict(
        recipe(world, base=str(world["audiogen"]), data=data, steps=20)
    )
    run = FinetuneRun(config, tmp_path / "ag")
    assert run.lm_config.sample_rate == 16_000 and run.data.frames == 12  # 25 frames/s
    run.run()
    valid = [line["valid"]["loss"] for line in log_lines(tmp_path / "ag") if "valid" in line]
    assert valid[-1] < 0.8 * valid[0], valid
    from audiotok.finetune.export import export_run

    export = export_run(run)
    model = AudioGen.get_pretrained(export / "audiotok", device="cpu")
    model.set_generation_params(use_sampling=False, duration=0.4)
    assert model.generate([CAPTION]).shape == (1, 1, 10 * 640)
    other = AudioGen.get_pretrained(export / "audiocraft", device="cpu", text_encoder=world["t5"])
    assert other.sample_rate == 16_000


def test_audiocraft_codec_file_points_only_at_real_hub_repositories(tmp_path, monkeypatch):
    """AudioGen's codec has no ``facebook/encodec_16khz``: its file is copied, never pointed at."""
    import huggingface_hub.constants

    from audiotok.finetune.config import FinetuneError

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    not_audiocraft = SimpleNamespace(format="hf", codec_path=None)

    def write(model_id: str) -> Path:
        target = tmp_path / model_id / "compression_state_dict.bin"
        target.parent.mkdir(exist_ok=True)
        write_audiocraft_codec(target, SimpleNamespace(model_id=model_id), not_audiocraft)
        return target

    pointer = torch.load(write("encodec_32khz"), weights_only=True)
    assert pointer == {"pretrained": "facebook/encodec_32khz"}
    with pytest.raises(FinetuneError, match="facebook/audiogen-medium's compression_state_dict"):
        write("encodec_16khz")
    snapshot = hub / "models--facebook--audiogen-medium" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "compression_state_dict.bin").write_bytes(b"audiogen's codec")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    assert write("encodec_16khz").read_bytes() == b"audiogen's codec"
    with pytest.raises(FinetuneError, match="audiotok_24khz has no audiocraft file"):
        write("audiotok_24khz")


# --- errors ---------------------------------------------------------------------------------


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("audiotok: error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def write_recipe(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))
    return path


def test_bad_input_gives_one_line_errors(world, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    bad_key = write_recipe(tmp_path, {**recipe(world), "learning_rate": 1})
    one_line_error(run_cli("finetune", bad_key, "-o", run_dir), "unknown key learning_rate")
    nested = write_recipe(tmp_path, recipe(world, optim={"lr": 1e-3, "beta": 1}))
    one_line_error(run_cli("finetune", nested, "-o", run_dir), "optim: unknown key beta")
    missing = recipe(world, data={"train": str(tmp_path / "nothing")})
    one_line_error(
        run_cli("finetune", write_recipe(tmp_path, missing), "-o", run_dir), "no token dataset"
    )
    codec = world["export"] / "compression_state_dict.bin"
    bare = encode_clips(tmp_path / "bare", tmp_path / "bare_tokens", codec, range(2), 32_000,
                        caption=None)  # fmt: skip
    uncaptioned = recipe(world, data={"train": str(bare)})
    one_line_error(
        run_cli("finetune", write_recipe(tmp_path, uncaptioned), "-o", run_dir),
        "no captions", "encode again into a new directory", f"or remove {bare} first",
    )  # fmt: skip
    wrong = recipe(world, data={"train": str(world["ag_train"])})  # AudioGen's 16 kHz tokens
    one_line_error(
        run_cli("finetune", write_recipe(tmp_path, wrong), "-o", run_dir), "the model's codec",
        f"(audiotok encode -m {world['export'] / 'compression_state_dict.bin'} ...)",
    )  # fmt: skip
    bundled = recipe(world, base=str(world["hf"]), data={"train": str(world["ag_train"])},
                     export={"formats": ["audiotok"]})  # fmt: skip
    one_line_error(
        run_cli("finetune", write_recipe(tmp_path, bundled), "-o", run_dir),
        f"bundled in {world['hf']}'s transformers weights",
    )
    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # peft not installed
    lora = recipe(world, lora={"rank": 4})
    one_line_error(run_cli("finetune", write_recipe(tmp_path, lora), "-o", run_dir), "peft")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optim": {"lr": float("inf")}}, "optim.lr: expected a finite number, not inf"),
        ({"lora": {"alpha": float("nan")}}, "lora.alpha: expected a finite number, not nan"),
        (
            {"data": {"segment_seconds": float("nan")}},
            "data.segment_seconds: expected a finite number",
        ),
        ({"data": {"batch_size": 1.5}}, "data.batch_size: expected an integer, not 1.5"),
        ({"steps": 2.5}, "steps: expected an integer"),
        ({"seed": "x"}, "seed: expected an integer"),
        ({"optim": {"betas": [0.9, "x"]}}, "optim.betas: expected a list of finite numbers"),
        ({"optim": {"betas": [0.9]}}, "optim.betas must be two numbers in [0, 1)"),
        ({"optim": {"max_norm": -1}}, "optim.max_norm must be >= 0"),  # would train uphill
        ({"optim": {"eps": -1}}, "optim.eps must be > 0"),
        ({"lora": {"dropout": 2}}, "lora.dropout in [0, 1)"),
        ({"data": {"valid_items": 0}}, "data.valid_items must be at least 1"),
    ],
)
def test_recipe_values_are_checked_before_training(world, changes, message):
    from audiotok.finetune.config import FinetuneError

    with pytest.raises(FinetuneError) as refused:
        FinetuneConfig.from_dict(recipe(world, **changes))
    assert message in str(refused.value)


def test_a_diverging_run_stops_before_its_weights_turn_nan(world, tmp_path, monkeypatch):
    from audiotok.finetune import loop

    real = loop.lm_loss

    def diverged(*args, **kwargs):
        loss, per_codebook = real(*args, **kwargs)
        return loss * float("nan"), per_codebook

    monkeypatch.setattr(loop, "lm_loss", diverged)
    run_dir = tmp_path / "run"
    result = run_cli("finetune", write_recipe(tmp_path, recipe(world, steps=3)), "-o", run_dir)
    one_line_error(result, "step 1: loss nan", "training diverged")
    assert not (run_dir / "export").exists()


def test_export_is_not_replaced_without_force(world, tmp_path):
    path = write_recipe(tmp_path, recipe(world, steps=2))
    run_dir = tmp_path / "run"
    assert run_cli("finetune", path, "-o", run_dir).exit_code == 0
    card = run_dir / "export" / "audiotok" / "lm.json"
    before = card.read_text()
    one_line_error(run_cli("finetune", path, "-o", run_dir), "use -f/--force")
    assert card.read_text() == before
    again = run_cli("finetune", path, "-o", run_dir, "-f")
    assert again.exit_code == 0, again.output
    assert "resuming" in again.output and sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.safetensors", "export", "log.jsonl", "recipe.json",
    ]  # fmt: skip
    changed = write_recipe(tmp_path, recipe(world, steps=2, seed=5))
    one_line_error(run_cli("finetune", changed, "-o", run_dir), "another recipe (seed")


def test_a_run_resumes_from_another_working_directory(world, tmp_path, monkeypatch):
    """Recipe paths are stored absolute: the same recipe, named relative to another working
    directory, resumes the run; a run that stored them relative (before) resumes too."""
    from safetensors.torch import save_file

    folder = tmp_path / "recipes"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    relative = {key: os.path.relpath(world[key], folder)
                for key in ("export", "t5", "train", "valid")}  # fmt: skip
    data = recipe(world, steps=3, base=relative["export"], text_encoder=relative["t5"],
                  data={"train": relative["train"], "valid": relative["valid"]})  # fmt: skip
    write_recipe(folder, data)
    monkeypatch.chdir(tmp_path)
    first = run_cli("finetune", "recipes/recipe.json", "-o", "run", "--until", "1")
    assert first.exit_code == 0, first.output
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    stored = json.loads(read_meta_raw(checkpoint))
    assert Path(stored["recipe"]["data"]["train"]) == world["train"]
    assert Path(stored["recipe"]["base"]).is_absolute()

    monkeypatch.chdir(tmp_path / "elsewhere")
    second = run_cli("finetune", "../recipes/recipe.json", "-o", "../run", "--until", "2")
    assert second.exit_code == 0, second.output
    assert "resuming ../run at step 1" in second.output

    # A run from before: its paths relative to the working directory of the time (tmp_path).
    tensors = load_file(checkpoint)
    meta = json.loads(read_meta_raw(checkpoint))
    for section, key in (("recipe", "base"), ("recipe", "text_encoder")):
        meta[section][key] = os.path.relpath(meta[section][key], tmp_path)
    meta["recipe"]["data"]["train"] = os.path.relpath(world["train"], tmp_path)
    save_file(tensors, checkpoint, metadata={"audiotok.finetune": json.dumps(meta)})
    third = run_cli("finetune", "../recipes/recipe.json", "-o", "../run")
    assert third.exit_code == 0, third.output
    assert "resuming ../run at step 2" in third.output


def read_meta_raw(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["audiotok.finetune"]


def test_a_recipe_kept_where_the_run_writes_its_own_is_refused(world, tmp_path):
    """``RUN/recipe.json`` is where a run writes its recipe: a user's recipe kept there is
    refused before anything runs, not replaced."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = write_recipe(run_dir, recipe(world, steps=1))
    before = path.read_text()
    one_line_error(run_cli("finetune", path, "-o", run_dir), "writes its own recipe there")
    assert path.read_text() == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["recipe.json"]


def test_learning_rate_schedule():
    """Warm-up to the peak, used once, then a cosine whose last step is at ``min_lr_ratio``."""
    from audiotok.finetune.config import OptimConfig
    from audiotok.finetune.loop import learning_rate

    optim = OptimConfig(lr=1.0, warmup_steps=3, min_lr_ratio=0.1)
    rates = [learning_rate(optim, step, 8) for step in range(8)]
    expected = [1 / 3, 2 / 3, 1.0, 0.91406, 0.68906, 0.41094, 0.18594, 0.1]
    assert rates == pytest.approx(expected, abs=1e-5)
    assert rates[-1] == pytest.approx(0.1, abs=1e-12)
    no_warmup = OptimConfig(lr=2.0, warmup_steps=0, min_lr_ratio=0.0)
    assert [learning_rate(no_warmup, s, 3) for s in range(3)] == pytest.approx([2.0, 1.0, 0.0])
    assert learning_rate(no_warmup, 0, 1) == 2.0


def test_an_export_format_that_cant_be_written_is_refused_before_training(world, tmp_path):
    """A transformers base whose codec has no audiocraft file, with the default export
    formats: refused when the run starts, not after training, in the export's own words."""
    path = write_recipe(tmp_path, recipe(world, base=str(world["hf"]), steps=2))
    run_dir = tmp_path / "run"
    result = run_cli("finetune", path, "-o", run_dir)
    one_line_error(result, "has no audiocraft file to export", "export.formats: [audiotok]")
    assert "step 1" not in result.output and not (run_dir / "checkpoint.safetensors").exists()
    ours = write_recipe(tmp_path, recipe(world, base=str(world["hf"]), steps=1,
                                         export={"formats": ["audiotok"]}))  # fmt: skip
    result = run_cli("finetune", ours, "-o", run_dir)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["audiotok"]
