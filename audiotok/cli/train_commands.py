"""``audiotok train`` and ``audiotok export-model``: the training recipe from the shell."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import AudiotokError
from .common import FiniteFloat, device_option, fail, force_option, handle_errors, message


def _echo_record(record: dict[str, Any]) -> None:
    validations = [k for k in ("validation", "validation_averaged") if k in record]
    for key in validations:
        parts = [
            f"{name} mel {v['mel_distance']:.3f} si-sdr {v['si_sdr']:.2f}"
            for name, v in record[key].items()
        ]
        label = key.replace("_", " ")
        click.echo(f"step {record['step']} {label}: " + "; ".join(parts), err=True)
    if validations:
        return
    values = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("step", "seconds"))
    click.echo(f"step {record['step']} ({record['seconds']:.0f} s): {values}", err=True)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run directory: checkpoint, logs. An existing run is resumed.",
)
@click.option("--manifest", type=click.Path(dir_okay=False), help="Override data.manifest.")
@click.option(
    "--subset",
    type=click.Path(file_okay=False),
    help="Train on a subset folder (audiotok make-subset) instead of the manifest.",
)
@click.option("--until", type=click.IntRange(min=0),
              help="Stop (with a checkpoint) at this step; resume later.")  # fmt: skip
@click.option("--minutes", type=FiniteFloat(min=0),
              help="Stop (with a checkpoint) after this much training.")  # fmt: skip
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State folder (e.g. training/): resume its compact state when it is further along "
    "than the run, replace it at the end and append the slice to its history.jsonl.",
)
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Crops per step (overrides the config).")  # fmt: skip
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field, e.g. --set losses.adversarial_start=2000 (repeatable).",
)
@click.option("--note", default="", help="Free text for the history line.")
@click.option("--threads", type=click.IntRange(min=1),
              help="torch threads (overrides the config).")  # fmt: skip
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    help="Training steps in float32, or the encoder and decoder under bfloat16 autocast "
    "(0.68 of the time per step on a CPU with AMX; overrides the config).",
)
@device_option
@handle_errors
def train(
    config: Path,
    run_dir: Path,
    manifest: str | None,
    subset: str | None,
    until: int | None,
    minutes: float | None,
    state_dir: Path | None,
    batch_size: int | None,
    overrides: tuple[str, ...],
    note: str,
    threads: int | None,
    precision: str | None,
    device: str,
) -> None:
    """Train a codec by the recipe in CONFIG (JSON; see docs/TRAINING.md).

    SIGTERM, SIGHUP (the terminal closed) or Ctrl-C stops it after the step in progress, with
    a checkpoint (and, with --state, the compact state and the history line); the exit status
    is then 128 + the signal's number, as for the other commands.
    """
    import signal

    from ..codec.torch_load import resolve_device
    from ..train.config import load_config
    from ..train.slices import run_slice
    from ..train.trainer import Trainer

    try:
        cfg = load_config(config, overrides)
    except ValueError as exc:
        fail(message(exc) if isinstance(exc, AudiotokError) else str(exc))
    data = cfg.data
    if manifest:  # instead of the recipe's data, its subset too (unless --subset follows)
        data = dataclasses.replace(data, manifest=manifest, subset="")
    if subset:
        data = dataclasses.replace(data, subset=subset)
    if batch_size:
        data = dataclasses.replace(data, batch_size=batch_size)
    cfg = dataclasses.replace(cfg, data=data)
    if threads:
        cfg = dataclasses.replace(cfg, threads=threads)
    if precision:
        cfg = dataclasses.replace(cfg, precision=precision)
    try:
        trainer = Trainer(cfg, run_dir, echo=_echo_record, device=resolve_device(device))
        if trainer.step:
            click.echo(f"resuming {run_dir} at step {trainer.step}", err=True)

        stopped_by: list[int] = []

        def stop(signum: int, _frame: Any) -> None:
            trainer.stop_requested = True
            stopped_by.append(signum)
            click.echo(f"{signal.Signals(signum).name}: stopping after this step", err=True)

        for name in ("SIGTERM", "SIGINT", "SIGHUP"):  # no SIGHUP on Windows
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), stop)
        seconds = None if minutes is None else minutes * 60
        # What the history line needs to tell this slice from the chain's usual one.
        changes = [f"--set {o}" for o in overrides] + ([f"--subset {subset}"] if subset else [])
        changes += [f"--precision {precision}"] if precision else []
        note = " ".join([note, *changes]).strip()
        record = run_slice(
            trainer,
            state_dir,
            seconds,
            until,
            note,
            on_start=lambda step: click.echo(f"training from step {step}", err=True),
        )
    except ValueError as exc:  # bad config, manifest or audio file: one line, not a traceback
        fail(message(exc) if isinstance(exc, AudiotokError) else str(exc))
    keys = ("validation", "validation_averaged")
    _echo_record({"step": trainer.step, **{k: record[k] for k in keys if k in record}})
    click.echo(f"{run_dir}: step {trainer.step} of {cfg.steps}", err=True)
    if stopped_by:  # saved, but stopped: `train && export-model` must not go on
        sys.exit(128 + stopped_by[0])


@click.command("make-subset")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The subset folder (files in it are replaced).",
)
@click.option("--manifest", type=click.Path(dir_okay=False), help="Override data.manifest.")
@click.option(
    "--seconds",
    type=(str, FiniteFloat(min=0, min_open=True)),
    multiple=True,
    help="Seconds of a category, e.g. --seconds speech 2000 (repeatable; default: "
    "speech 2000, music 2800, sfx 1200).",
)
@click.option("--bitrate", default=32, show_default=True, type=click.IntRange(min=6, max=510),
              help="Opus kbps.")  # fmt: skip
@handle_errors
def make_subset(
    config: Path,
    out: Path,
    manifest: str | None,
    seconds: tuple[tuple[str, float], ...],
    bitrate: int,
) -> None:
    """Write a compressed training subset of CONFIG's manifest (Opus snippets + validation).

    A GPU slice carries it instead of the full training audio (docs/TRAINING.md).
    """
    from ..train.config import load_config
    from ..train.data import read_manifest
    from ..train.subset import DEFAULT_PLAN
    from ..train.subset import make_subset as write_subset

    try:
        cfg = load_config(config)
        source = manifest or cfg.data.manifest
        if not source:
            fail(f"{config}: data.manifest is not set; give --manifest")
        plan = dataclasses.replace(
            DEFAULT_PLAN,
            seconds=dict(seconds) if seconds else DEFAULT_PLAN.seconds,
            bitrate=bitrate * 1000,
        )
        path = write_subset(
            read_manifest(source), out, cfg.data, cfg.model.sample_rate, cfg.seed, plan
        )
    except ValueError as exc:
        fail(message(exc) if isinstance(exc, AudiotokError) else str(exc))
    click.echo(str(path))


@click.command("export-model")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("card", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="Model id carried by files and tokens (default: the card's stem).")
@click.option("--manifest", type=click.Path(dir_okay=False), help="The training manifest.")
@click.option("--prior-batches", default=64, show_default=True, type=click.IntRange(min=1),
              help="Batches for the priors.")  # fmt: skip
@click.option("--float32", is_flag=True, help="Keep float32 weights (default: float16).")
@click.option(
    "--averaged",
    is_flag=True,
    help="Export the averaged weights (a recipe with optim.ema_decay) instead of the last.",
)
@force_option
@handle_errors
def export_model(
    run_dir: Path,
    card: Path,
    name: str | None,
    manifest: str | None,
    prior_batches: int,
    float32: bool,
    averaged: bool,
    force: bool,
) -> None:
    """Write a trained codec as a model card (CARD.json + CARD.safetensors).

    RUN_DIR is a run directory (its checkpoint) or a state folder such as training/ (its
    compact state; its history gives the validation and compute on the card).
    """
    from ..train.export import export_codec
    from ..train.slices import STATE_NAME
    from ..train.state import CHECKPOINT_NAME

    checkpoint = next(
        (run_dir / n for n in (CHECKPOINT_NAME, STATE_NAME) if (run_dir / n).is_file()), None
    )
    if checkpoint is None:
        fail(f"{run_dir}: no {CHECKPOINT_NAME} or {STATE_NAME}; train first")
    try:
        path = export_codec(
            checkpoint,
            card,
            name=name or card.stem,
            manifest=manifest,
            prior_batches=prior_batches,
            half=not float32,
            averaged=averaged,
            overwrite=force,
        )
    except ValueError as exc:
        fail(message(exc) if isinstance(exc, AudiotokError) else str(exc))
    click.echo(str(path))
