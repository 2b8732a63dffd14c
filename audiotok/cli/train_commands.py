"""``audiotok train`` and ``audiotok export-model``: the training recipe from the shell."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from .common import device_option, fail, force_option, handle_errors


def _echo_record(record: dict[str, Any]) -> None:
    if "validation" in record:
        parts = [
            f"{key} mel {v['mel_distance']:.3f} si-sdr {v['si_sdr']:.2f}"
            for key, v in record["validation"].items()
        ]
        click.echo(f"step {record['step']} validation: " + "; ".join(parts), err=True)
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
@click.option("--until", type=int, help="Stop (with a checkpoint) at this step; resume later.")
@click.option("--threads", type=int, help="torch threads (overrides the config).")
@device_option
@handle_errors
def train(
    config: Path,
    run_dir: Path,
    manifest: str | None,
    until: int | None,
    threads: int | None,
    device: str,
) -> None:
    """Train a codec by the recipe in CONFIG (JSON; see docs/TRAINING.md)."""
    from ..codec.load import resolve_device
    from ..train.config import load_config
    from ..train.trainer import Trainer

    try:
        cfg = load_config(config)
    except ValueError as exc:
        fail(str(exc))
    if manifest:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, manifest=manifest))
    if threads:
        cfg = dataclasses.replace(cfg, threads=threads)
    try:
        trainer = Trainer(cfg, run_dir, echo=_echo_record, device=resolve_device(device))
        if trainer.step:
            click.echo(f"resuming {run_dir} at step {trainer.step}", err=True)
        trainer.run(until)
    except ValueError as exc:  # bad config, manifest or audio file: one line, not a traceback
        fail(str(exc))
    click.echo(f"{run_dir}: step {trainer.step} of {cfg.steps}", err=True)


@click.command("export-model")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("card", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="Model id carried by files and tokens (default: the card's stem).")
@click.option("--manifest", type=click.Path(dir_okay=False), help="The training manifest.")
@click.option("--prior-batches", default=64, show_default=True, help="Batches for the priors.")
@click.option("--float32", is_flag=True, help="Keep float32 weights (default: float16).")
@force_option
@handle_errors
def export_model(
    run_dir: Path,
    card: Path,
    name: str | None,
    manifest: str | None,
    prior_batches: int,
    float32: bool,
    force: bool,
) -> None:
    """Write a trained run's codec as a model card (CARD.json + CARD.safetensors)."""
    from ..train.export import export_codec
    from ..train.state import CHECKPOINT_NAME

    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.is_file():
        fail(f"{run_dir}: no {CHECKPOINT_NAME}; train first")
    try:
        path = export_codec(
            checkpoint,
            card,
            name=name or card.stem,
            manifest=manifest,
            prior_batches=prior_batches,
            half=not float32,
            overwrite=force,
        )
    except ValueError as exc:
        fail(str(exc))
    click.echo(str(path))
