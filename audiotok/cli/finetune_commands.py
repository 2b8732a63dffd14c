"""``audiotok finetune``: MusicGen / AudioGen fine-tuning on a captioned token dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import device_option, force_option, handle_errors, import_torch


def _echo(record: dict[str, Any]) -> None:
    if "valid" in record:
        v = record["valid"]
        per = " ".join(f"{x:.3f}" for x in v["per_codebook"])
        click.echo(f"step {v['step']} validation: loss {v['loss']:.4f} (codebooks {per})", err=True)
    elif "slice" in record:
        s = record["slice"]
        click.echo(
            f"slice: steps {s['steps'][0]}..{s['steps'][1]} in {s['seconds']:.0f} s "
            f"({s['steps_per_s']:.3g} steps/s)",
            err=True,
        )
    else:
        click.echo(
            f"step {record['step']} ({record['seconds']:.0f} s): loss {record['loss']:.4f} "
            f"lr {record['lr']:.3g} grad_norm {record['grad_norm']:.3g}",
            err=True,
        )


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run directory: checkpoint, log.jsonl, export/. An existing run is resumed.",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop (validated, with a checkpoint) after this much training; run again to resume.",
)
@click.option("--until", type=click.IntRange(min=1), help="Stop at this step at the latest.")
@click.option(
    "--export",
    "export_now",
    is_flag=True,
    help="Export at the step reached even if the run is not finished (it always exports "
    "when it reaches the recipe's steps).",
)
@device_option
@force_option
@handle_errors
def finetune(
    config: Path,
    run_dir: Path,
    minutes: float | None,
    until: int | None,
    export_now: bool,
    device: str,
    force: bool,
) -> None:
    """Fine-tune MusicGen or AudioGen by the recipe in CONFIG (YAML or JSON).

    The data is a token dataset made with the model's codec (audiotok encode -m
    encodec_32khz for MusicGen, encodec_16khz for AudioGen) whose files have captions. See
    docs/FINETUNING.md. SIGTERM or Ctrl-C stops after the step in progress, with a
    checkpoint. Needs pip install 'audiotok[finetune]'.
    """
    import signal

    import_torch()
    from ..codec.torch_load import resolve_device
    from ..finetune.config import load_config
    from ..finetune.export import EXPORT_DIR, export_run
    from ..finetune.loop import FinetuneRun, check_recipe_file

    cfg = load_config(config)
    check_recipe_file(config, run_dir)
    if (run_dir / EXPORT_DIR).exists() and not force:
        # Said before training, not after it: finishing would have to replace it.
        click.echo(f"note: {run_dir / EXPORT_DIR} exists; exporting again needs -f", err=True)
    run = FinetuneRun(cfg, run_dir, resolve_device(device), echo=_echo)
    if run.step:
        click.echo(f"resuming {run_dir} at step {run.step}", err=True)
    click.echo(
        f"{run.trainable:,} trainable parameters; {run.data.describe()['train_files']} training "
        f"and {len(run.data.valid)} validation files, crops of {run.data.frames} frames",
        err=True,
    )

    def stop(signum: int, _frame: Any) -> None:
        run.stop_requested = True
        click.echo(f"{signal.Signals(signum).name}: stopping after this step", err=True)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    run.run(None if minutes is None else minutes * 60, until)
    click.echo(f"{run_dir}: step {run.step} of {cfg.steps}", err=True)
    if run.done or export_now:
        target = export_run(run, force)
        click.echo(f"{target}: exported (audiotok generate -m {target}/audiotok)", err=True)
