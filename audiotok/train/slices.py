"""Training in slices that accumulate across sessions and machines.

The default codec is trained a few minutes or hours at a time, on whatever machine a session
has: a CPU in the background, now and then a lent GPU. Each slice starts from the state the
last one left, trains for a time box, and leaves two things behind in a state folder (the
repository's ``training/``)::

    training/state.safetensors   the compact resume state (below)
    training/history.jsonl       one line per slice: date, machine, steps, audio seen, wall
                                 time, losses, validation per category and bitrate

**The compact state** is what resuming needs and no more, since every commit of it adds its
size to every clone: codec and discriminator weights as float16, each codebook's entries
(float16) and usage counts (float32; the EMA sums are rebuilt from the two), the random
generator, the step, the balancer's norms and the run's totals; with ``optim.ema_decay``
the averaged codec weights too (float16). It leaves out the Adam moments (twice the weights
again): a resumed slice starts them afresh and ramps the learning rate up over
``optim.rewarm_steps`` steps while they settle. About 11 MB for the default model (16 MB
with the averaged weights), against 50 MB for a full checkpoint.

Within one slice the run directory keeps full checkpoints (moments included), so a slice
stopped and restarted on the same machine resumes exactly; the compact state is the hand-over
between machines. Whichever of the two is further along is the one resumed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..runtime.files import atomic_path
from .state import META_KEY, read_training_meta
from .trainable import smoothed_usage
from .trainer import Trainer

STATE_NAME = "state.safetensors"
AVERAGED = "averaged."  # key prefix of the averaged weights (optim.ema_decay)
HISTORY_NAME = "history.jsonl"


def _is_ema_sum(key: str) -> bool:
    return key.endswith("._codebook.embed_avg")


def save_compact_state(trainer: Trainer, path: str | os.PathLike) -> None:
    """Writes ``trainer``'s compact resume state to ``path`` atomically (see the module doc)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in (("codec", trainer.codec), ("disc", trainer.disc)):
        for key, value in module.state_dict().items():
            if _is_ema_sum(key):
                continue  # embed * normalised usage: rebuilt on load
            value = value.detach().cpu()
            if value.is_floating_point() and not key.endswith("cluster_size"):
                value = value.half()
            tensors[f"{name}.{key}"] = value.contiguous()
    if trainer.averaged is not None:  # its weights only: its codebooks are the live ones
        for key, value in trainer.averaged.module.named_parameters():
            tensors[f"{AVERAGED}module.{key}"] = value.detach().cpu().half().contiguous()
        tensors[f"{AVERAGED}n_averaged"] = trainer.averaged.n_averaged.detach().cpu()
    tensors["rng"] = trainer.generator.get_state()
    meta = {**trainer.meta(), "compact": True}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(save(tensors, metadata={META_KEY: json.dumps(meta)}))


def load_compact_state(trainer: Trainer, path: str | os.PathLike) -> None:
    """Restores a compact state into a ``trainer`` of the same architecture.

    The optimisers start with empty moments, also where the trainer resumed an older
    checkpoint of its run directory first (its moments belong to other weights); the
    learning rate ramps up again from the state's step.

    Raises:
        ValueError: Not a compact state, or one of another architecture.
    """
    meta = read_training_meta(path)
    if not meta.get("compact"):
        raise ValueError(f"{path}: not a compact training state")
    tensors = load_file(str(path))
    settings = trainer.codec.codebooks
    for name, module in (("codec", trainer.codec), ("disc", trainer.disc)):
        prefix = name + "."
        state = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        for key in list(state):
            if key.endswith("._codebook.cluster_size"):
                base = key[: -len("cluster_size")]
                usage = smoothed_usage(state[key], settings.epsilon)
                state[base + "embed_avg"] = state[base + "embed"] * usage[:, None]
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"{path}: {name} does not fit this config ({first})") from None
    try:
        trainer.restore_meta(meta)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    for optimizer in (trainer.optimizer, trainer.disc_optimizer):
        optimizer.state.clear()
    if trainer.averaged is not None:
        with torch.no_grad():
            if f"{AVERAGED}n_averaged" in tensors:
                for key, value in trainer.averaged.module.named_parameters():
                    value.copy_(tensors[f"{AVERAGED}module.{key}"])
                trainer.averaged.n_averaged.copy_(tensors[f"{AVERAGED}n_averaged"])
            else:  # none in the state: the average starts again from its weights
                trainer.averaged.n_averaged.zero_()
    trainer.generator.set_state(tensors["rng"])
    trainer.rewarm_start = trainer.step


def state_step(path: str | os.PathLike) -> int:
    """The step a checkpoint or compact state was saved at (-1 if there is none)."""
    if not Path(path).is_file():
        return -1
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return int(json.loads(metadata.get(META_KEY, '{"step": -1}'))["step"])


def device_description(device: torch.device) -> str:
    """A machine's name for the history: the GPU's, or the CPU's with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def append_history(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Appends one JSON line to the history file (created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, separators=(", ", ": ")) + "\n")


def run_slice(
    trainer: Trainer,
    state_dir: str | os.PathLike | None,
    seconds: float | None,
    until: int | None = None,
    note: str = "",
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One time-boxed slice: resume, train, validate, save, record.

    Args:
        trainer: Built on the run directory (it has loaded the run's checkpoint, if any).
        state_dir: The state folder (``training/``): its compact state is resumed when it is
            further along than the run directory, and is replaced at the end, and the slice
            is appended to its history. None: the run directory alone.
        seconds: Wall-time box of the training (validation and saving come after it).
        until: Stop at this step at the latest.
        note: Free text for the history line (the recipe variant, say).
        on_start: Called with the first step once the slice has resumed and trains (a
            background slice's script waits for it: loading can fail after minutes).

    Returns:
        The history record of the slice.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    if state_dir is not None:
        compact = Path(state_dir) / STATE_NAME
        if state_step(compact) > (trainer.step if trainer.checkpoint_path.is_file() else -1):
            load_compact_state(trainer, compact)
    first_step, audio_before = trainer.step, trainer.totals["audio_seconds"]
    if on_start is not None:
        on_start(first_step)
    train_before = trainer.totals["train_seconds"]
    last = trainer.run(until=until, seconds=seconds)
    validation = trainer.validate()
    averaged = trainer.validate(averaged=True) if trainer.averaged is not None else None
    # In the run's log too (echoed once, by the caller): what export-model reads for a run
    # directory trained without --state.
    trainer._log({"step": trainer.step, "validation": validation}, echo=False)
    record = {
        "date": started.isoformat(timespec="seconds"),
        "device": trainer.device.type,
        "machine": device_description(trainer.device),
        "torch": torch.__version__,
        "steps": [first_step, trainer.step],
        "batch_size": trainer.config.data.batch_size,
        "audio_seconds": round(trainer.totals["audio_seconds"] - audio_before, 1),
        "train_seconds": round(trainer.totals["train_seconds"] - train_before, 1),
        "wall_seconds": round(
            (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1
        ),
        "totals": {k: round(v, 1) for k, v in trainer.totals.items()},
        "losses": {k: v for k, v in last.items() if k not in ("step", "seconds")},
        "validation": validation,
        **({"validation_averaged": averaged} if averaged is not None else {}),
        "note": note,
    }
    if state_dir is not None:
        save_compact_state(trainer, Path(state_dir) / STATE_NAME)
        append_history(Path(state_dir) / HISTORY_NAME, record)
    return record
