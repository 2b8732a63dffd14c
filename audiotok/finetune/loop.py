"""The fine-tuning loop: steps, validation, checkpoints and logs of one run directory.

A run directory holds::

    RUN/recipe.json             the recipe of the last checkpoint (resolved paths)
    RUN/checkpoint.safetensors  the resume state (:mod:`.checkpoint`)
    RUN/log.jsonl               one JSON object per line: training lines every ``log_every``
                                steps, ``"valid"`` lines at each validation, ``"slice"`` lines
    RUN/export/                 the exported model (:mod:`.export`)

:class:`FinetuneRun` loads the base model, builds what trains and the optimiser, and resumes
from the run's checkpoint when there is one. :meth:`FinetuneRun.run` trains for a time box
(``--minutes``) or up to a step, then validates and writes a checkpoint, so a slice stopped
at any point continues where it was. One step draws ``accumulate`` micro-batches, drops
their conditions for classifier-free guidance with probability ``cfg_dropout``, and takes
one AdamW step at the learning rate of :func:`learning_rate`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..generate.generation import pattern_provider
from ..generate.load import load_lm
from ..runtime.files import atomic_path
from ..train.schedule import warmup_cosine
from .checkpoint import CHECKPOINT_NAME, load_state, read_meta, save_state
from .config import FinetuneConfig, FinetuneError, OptimConfig, same_paths
from .data import Batch, CaptionedData
from .export import base_path, check_export
from .lora import add_lora, select_trainable
from .loss import cfg_dropout, compute_predictions, cross_entropy_sums, lm_loss, text_conditions

RECIPE_NAME = "recipe.json"
LOG_NAME = "log.jsonl"
# Recipe keys that may change between slices of one run; any other change is refused.
MUTABLE = ("log_every", "valid_every", "checkpoint_every", "export", "steps")


def learning_rate(optim: OptimConfig, step: int, steps: int) -> float:
    """The rate of step ``step`` (0-based) of ``steps``: warm-up to the peak ``lr``, used once,
    then a cosine whose last step is at ``lr * min_lr_ratio`` (:func:`warmup_cosine`)."""
    return warmup_cosine(optim.lr, optim.warmup_steps, optim.min_lr_ratio, step, steps)


def check_recipe_file(recipe: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Refuses a recipe kept at ``RUN/recipe.json`` of a run without a checkpoint: the run
    writes the recipe of its checkpoints there and would replace the user's file. (With a
    checkpoint, that file is the run's own, written by it: resuming from it is fine.)

    Raises:
        FinetuneError: ``recipe`` is that file.
    """
    run_dir = Path(run_dir)
    target = run_dir / RECIPE_NAME
    if (run_dir / CHECKPOINT_NAME).is_file() or not target.is_file():
        return
    if os.path.samefile(recipe, target):
        raise FinetuneError(
            f"{recipe}: the run writes its own recipe there, which would replace yours; "
            f"keep your recipe outside {run_dir} or under another name"
        )


class Trainable(nn.Module):
    """The LM and the conditioners' projections as one module (what the optimiser sees).

    Parameter names are ``lm.*`` and ``proj.{condition}.*``; T5 is not in it.
    """

    def __init__(self, lm: nn.Module, projections: dict[str, nn.Module]) -> None:
        super().__init__()
        self.lm = lm
        self.proj = nn.ModuleDict(projections)


class FinetuneRun:
    """One fine-tuning run in a directory: built from a recipe, resumed if it exists.

    Args:
        config: The recipe.
        run_dir: The run directory (created if missing).
        device: Where to train.
        echo: Called with every log record (the CLI prints them).

    Raises:
        FinetuneError: A recipe that does not fit the run directory's, a bad dataset, or a
            model that can't be fine-tuned.
    """

    def __init__(
        self,
        config: FinetuneConfig,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
        echo: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config = self._recipe(config)
        self.echo = echo
        self.device = torch.device(device)
        self.loaded = load_lm(
            config.base, device=self.device, text_encoder=config.text_encoder or None
        )
        self.lm, self.conditioner, self.codec, self.lm_config = self.loaded
        # Before any training: an export format that can't be written would fail at the end.
        base = base_path(config)
        check_export(config, self.codec, base)
        self.data = CaptionedData(config.data, self.lm_config, self.codec, base)
        self.patterns = pattern_provider(self.lm_config)
        self.generator = torch.Generator().manual_seed(config.seed)
        for p in self.conditioner.parameters():  # T5 frozen; projections below
            p.requires_grad_(False)
        if config.lora.rank:
            add_lora(self.lm, config.lora, config.seed)
        select_trainable(self.lm, config.train_layers, bool(config.lora.rank))
        projections = {n: self.conditioner.conditioners[n].output_proj for n in
                       self.conditioner.text_names}  # fmt: skip
        for module in projections.values():
            module.requires_grad_(config.train_projection)
        self.model = Trainable(self.lm, projections)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise FinetuneError("the recipe trains nothing (train_layers, lora, projections)")
        self.trainable = sum(p.numel() for p in params)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
            weight_decay=optim.weight_decay,
        )  # fmt: skip
        self.step = 0
        self.stop_requested = False  # set by a signal handler: stop after the step in hand
        self.last_valid: dict[str, Any] | None = None
        self.bf16 = config.precision == "bf16" or (
            config.precision == "auto" and self.device.type == "cuda"
        )
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        if self.checkpoint_path.is_file():
            meta = load_state(self.checkpoint_path, self.model, self.optimizer, self.generator)
            self.step, self.last_valid = int(meta["step"]), meta.get("valid")
        else:
            # torch's global generators drive LoRA's dropout: a new run starts them from the
            # seed (and checkpoints carry them), so that a run is the same however it is cut.
            torch.manual_seed(config.seed)

    def _recipe(self, config: FinetuneConfig) -> FinetuneConfig:
        """Writes the recipe into a new run, or checks it against a resumed run's."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise FinetuneError(f"{self.run_dir}: is not a directory")
        if (self.run_dir / CHECKPOINT_NAME).is_file():
            new = config.to_dict()
            bases = [Path.cwd(), *Path(os.path.abspath(self.run_dir)).parents]
            saved = same_paths(read_meta(self.run_dir / CHECKPOINT_NAME)["recipe"], new, bases)
            changed = sorted(k for k in new if k not in MUTABLE and new[k] != saved.get(k))
            if changed:
                raise FinetuneError(
                    f"{self.run_dir}: a run of another recipe ({', '.join(changed)} differ); "
                    "start a new run directory"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return config

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            yield

    def log(self, record: dict[str, Any]) -> None:
        """Appends ``record`` to ``log.jsonl`` and echoes it."""
        with open(self.run_dir / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.echo is not None:
            self.echo(record)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss of ``batch`` as it is (no dropout): ``(loss, per_codebook [K])``."""
        batch = batch.to(self.device)
        with self._autocast():
            condition = text_conditions(self.conditioner, batch.texts)
            return lm_loss(self.lm, self.patterns, batch.codes, batch.mask, condition)

    def train_step(self) -> dict[str, Any]:
        """One optimiser step over ``accumulate`` micro-batches; returns its log record."""
        cfg = self.config
        lr = learning_rate(cfg.optim, self.step, cfg.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.conditioner.eval()  # T5 stays in eval mode (no dropout), as it is frozen
        self.optimizer.zero_grad(set_to_none=True)
        total, per_codebook = 0.0, torch.zeros(self.lm_config.n_q)
        for _ in range(cfg.data.accumulate):
            batch = self.data.sample(self.generator)
            batch.texts = cfg_dropout(batch.texts, cfg.cfg_dropout, self.generator)
            loss, per = self.loss(batch)
            (loss / cfg.data.accumulate).backward()
            total += loss.item() / cfg.data.accumulate
            per_codebook += per.float().cpu() / cfg.data.accumulate
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_norm or float("inf"))
        if not (math.isfinite(total) and math.isfinite(float(norm))):
            # Stopped before the update: the weights and the last checkpoint stay finite.
            raise FinetuneError(
                f"step {self.step + 1}: loss {total:g}, gradient norm {float(norm):g}: "
                "training diverged; a new run with a lower optim.lr or with optim.max_norm "
                "set may not (a resume keeps the recipe)"
            )
        self.optimizer.step()
        self.step += 1
        return {"step": self.step, "loss": total, "per_codebook": per_codebook.tolist(),
                "lr": lr, "grad_norm": float(norm)}  # fmt: skip

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Cross-entropy of the validation crops: per codebook (token-weighted over all the
        crops) and their mean, the validation loss; nats per token."""
        self.model.eval()
        sums = torch.zeros(self.lm_config.n_q, dtype=torch.float64)
        counts = torch.zeros(self.lm_config.n_q, dtype=torch.float64)
        for batch in self.data.validation():
            batch = batch.to(self.device)
            with self._autocast():
                condition = text_conditions(self.conditioner, batch.texts)
                logits, mask = compute_predictions(self.lm, self.patterns, batch.codes, condition)
                s, c = cross_entropy_sums(logits, batch.codes, batch.mask & mask[None])
            sums += s.double().cpu()
            counts += c.double().cpu()
        per_codebook = (sums / counts.clamp(min=1)).tolist()
        return {"loss": sum(per_codebook) / len(per_codebook), "per_codebook": per_codebook}

    def save(self) -> None:
        """Writes the resume state (atomically)."""
        meta = {"step": self.step, "recipe": self.config.to_dict(), "valid": self.last_valid}
        save_state(self.checkpoint_path, self.model, self.optimizer, self.generator, meta)
        recipe = json.dumps(self.config.to_dict(), indent=2) + "\n"
        with atomic_path(self.run_dir / RECIPE_NAME, overwrite=True) as tmp:
            tmp.write_text(recipe, encoding="utf-8")

    def _validate_and_log(self) -> None:
        self.last_valid = {"step": self.step, **self.validate()}
        self.log({"valid": self.last_valid})

    def run(self, seconds: float | None = None, until: int | None = None) -> dict[str, Any]:
        """Trains until ``config.steps``, ``until``, or ``seconds`` of wall time (checked
        between steps), validating and checkpointing as the recipe says and at the end.

        Returns:
            The slice's record (also logged): steps, seconds, steps/s, last validation.
        """
        cfg = self.config
        end = min(cfg.steps, until if until is not None else cfg.steps)
        start, first = time.monotonic(), self.step
        if self.step == 0 and self.last_valid is None:
            self._validate_and_log()  # the base model's validation loss, to compare against
        while (
            self.step < end
            and not self.stop_requested
            and (seconds is None or time.monotonic() - start < seconds)
        ):
            record = self.train_step()
            if self.step % cfg.log_every == 0 or self.step == end:
                self.log({**record, "seconds": round(time.monotonic() - start, 3)})
            if self.step % cfg.valid_every == 0:
                self._validate_and_log()
            if self.step % cfg.checkpoint_every == 0:
                self.save()
        if self.last_valid is None or self.last_valid["step"] != self.step:
            self._validate_and_log()
        self.save()
        elapsed = time.monotonic() - start
        record = {"slice": {"steps": [first, self.step], "seconds": round(elapsed, 3),
                            "steps_per_s": (self.step - first) / elapsed if elapsed else 0.0,
                            "valid": self.last_valid, "done": self.step >= cfg.steps}}  # fmt: skip
        self.log(record)
        return record["slice"]

    @property
    def done(self) -> bool:
        """Whether the run has reached ``config.steps``."""
        return self.step >= self.config.steps
