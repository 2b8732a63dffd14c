"""The training loop: one step of codec and discriminator, validation, logs, checkpoints.

A run lives in a directory::

    RUN/config.json              the recipe, as given
    RUN/checkpoint.safetensors   the latest resumable state (see :mod:`.state`)
    RUN/log.jsonl                one JSON record per logged step and per validation

Starting a run in a directory that holds a checkpoint resumes it; as batches are a function
of ``(seed, step)`` and every other random draw comes from the checkpointed generator, a
resumed run computes exactly what an uninterrupted one would (on the same machine and thread
count: float results depend on both).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..codec.config import CodecConfig
from .balancer import Balancer
from .clipbank import training_samplers
from .config import TrainConfig
from .data import INIT_STREAM
from .discriminator import MultiScaleSTFTDiscriminator
from .losses import (
    LogMelL1Loss,
    MultiScaleMelLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    mel_distance,
    si_sdr,
)
from .schedule import warmup_cosine
from .state import CHECKPOINT_NAME, load_training_state, save_training_state
from .trainable import TrainableCodec

LOG_NAME = "log.jsonl"


def check_same_model(saved: dict[str, Any], model: CodecConfig) -> None:
    """Raises ``ValueError`` unless a checkpoint's model config ``saved`` is ``model``.

    Compared through the dataclass, so that a field added since the checkpoint was written
    (absent from ``saved``, at its default in ``model``) still matches.
    """
    try:
        saved = CodecConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"its model config is not one this version reads ({exc})") from None
    if saved != model.to_dict():
        raise ValueError("the checkpoint was trained with another model config")


class Trainer:
    """Trains a codec by a :class:`TrainConfig` in a run directory, resuming if it can.

    Args:
        config: The recipe.
        run_dir: Where the checkpoint and logs go.
        echo: Called with each log record (for a progress display), or None.
        device: Where the codec and discriminator run. Random draws stay on the CPU's
            generator, so a run's draws do not depend on the device.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        echo: Callable[[dict[str, Any]], None] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config, self.run_dir, self.echo = config, Path(run_dir), echo
        self.device = torch.device(device)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)  # initial weights
        self.codec = TrainableCodec(config.model, config.codebooks, config.autocast_dtype)
        losses = config.losses
        self.disc = MultiScaleSTFTDiscriminator(
            losses.disc_ffts, config.model.channels, losses.disc_filters, losses.disc_filters_scale
        )
        self.codec.to(self.device)
        self.disc.to(self.device)
        if self.device.type == "cuda":
            # TF32 matmuls and convolutions: the codec is small and launch-bound, so this
            # is free speed; nothing trained here is bit-exact across devices anyway.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        betas = tuple(config.optim.betas)
        self.optimizer = torch.optim.Adam(self.codec.parameters(), config.optim.lr, betas=betas)
        self.disc_optimizer = torch.optim.Adam(
            self.disc.parameters(), config.optim.disc_lr, betas=betas
        )
        # The codec's weights averaged over the last ~1 / (1 - decay) steps, beside them.
        self.averaged = (
            AveragedModel(self.codec, multi_avg_fn=get_ema_multi_avg_fn(config.optim.ema_decay))
            if config.optim.ema_decay > 0
            else None
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.balancer = Balancer(
            {
                "l1": losses.l1,
                "sisdr": losses.sisdr,
                "mel": losses.mel,
                "logmel": losses.logmel,
                "adversarial": losses.adversarial,
                "feature_matching": losses.feature_matching,
            },
            losses.balancer_total_norm,
            losses.balancer_ema,
        )
        self.mel_loss = MultiScaleMelLoss(
            config.model.sample_rate,
            *losses.mel_fft_range,
            f_min=losses.mel_fmin,
            normalized=losses.mel_normalized,
            alphas=losses.mel_alphas,
            floor=losses.mel_floor,
        )
        self.logmel_loss = LogMelL1Loss(config.model.sample_rate, floor=losses.logmel_floor)
        self.sampler, self.valid_sampler = self._samplers()
        self.step = 0
        # Step at which the learning rate last started ramping up again (a compact resume).
        self.rewarm_start: int | None = None
        # Totals over the whole run, every slice and machine: for the history.
        self.totals = {"audio_seconds": 0.0, "train_seconds": 0.0}
        self.stop_requested = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.checkpoint_path.is_file():
            self._load()
        else:
            self.codec.data_init(self.sampler.batch(INIT_STREAM).to(self.device))
            (self.run_dir / "config.json").write_text(
                json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8"
            )

    def _samplers(self) -> tuple[Any, Any]:
        """Training and validation crops (a benchmark substitutes its own)."""
        cfg = self.config
        return training_samplers(cfg.data, cfg.model.sample_rate, cfg.seed, self.device)

    @property
    def checkpoint_path(self) -> Path:
        """The run's checkpoint file."""
        return self.run_dir / CHECKPOINT_NAME

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to the peak, used once, then a cosine whose last step
        (``steps - 1``) is at ``min_lr_ratio`` of it (:func:`warmup_cosine`); after a resume
        from a compact state, ramped up again over ``optim.rewarm_steps``."""
        optim = self.config.optim
        rate = warmup_cosine(
            optim.lr, optim.warmup_steps, optim.min_lr_ratio, step, self.config.steps
        )
        if self.rewarm_start is not None and optim.rewarm_steps > 0:
            rate *= min(1.0, (step - self.rewarm_start + 1) / optim.rewarm_steps)
        return rate

    def _adversarial(self) -> bool:
        losses = self.config.losses
        active = losses.adversarial > 0 or losses.feature_matching > 0
        return active and self.step >= losses.adversarial_start

    def _disc_view(self, x: Tensor, decoded: Tensor) -> tuple[Tensor, Tensor]:
        """What the discriminator sees of a step's input and decoded audio ``[B, C, T]``.

        The first ``losses.disc_items`` items (each item is drawn on its own, so they are as
        good a sample as any; with per-item quantizer dropout they are the ones that drew
        their bandwidth) and, with ``losses.disc_seconds``, one window of that length at a
        position drawn from the run's generator, the same for the input and its decoding:
        ``[B', C, T']`` each.
        """
        losses = self.config.losses
        if losses.disc_items:
            x, decoded = x[: losses.disc_items], decoded[: losses.disc_items]
        length = round(losses.disc_seconds * self.config.model.sample_rate)
        if 0 < length < x.shape[-1]:
            start = int(torch.randint(x.shape[-1] - length + 1, (1,), generator=self.generator))
            x, decoded = x[..., start : start + length], decoded[..., start : start + length]
        return x, decoded

    def _discriminate(self, audio: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        """The discriminator's logits and features on ``audio``, float32.

        Under the recipe's ``precision`` as the codec: its convolutions are most of an
        adversarial step's cost, and bf16 is where a CPU with AMX runs them fast. The STFTs
        stay float32 (autocast leaves them).
        """
        dtype = self.codec.autocast
        if dtype is None:
            return self.disc(audio)
        with torch.autocast(audio.device.type, dtype=dtype):
            logits, features = self.disc(audio)
        return [t.float() for t in logits], [[t.float() for t in f] for f in features]

    def train_step(self) -> dict[str, Any]:
        """One optimisation step on the batch of the current step; returns its metrics."""
        cfg = self.config
        self.codec.train()
        x = self.sampler.batch(self.step).to(self.device)
        out = self.codec(x, self.codec.draw_codebooks(x.shape[0], self.generator), self.generator)
        losses = {"l1": F.l1_loss(out.audio, x), "mel": self.mel_loss(out.audio, x)}
        if cfg.losses.logmel > 0:
            losses["logmel"] = self.logmel_loss(out.audio, x)
        if cfg.losses.sisdr > 0:
            losses["sisdr"] = -si_sdr(out.audio, x).mean()
        adversarial = self._adversarial()
        if adversarial:
            real, fake = self._disc_view(x, out.audio)
            fake_logits, fake_features = self._discriminate(fake)
            with torch.no_grad():
                _, real_features = self._discriminate(real)
            losses["adversarial"] = hinge_generator_loss(fake_logits)
            losses["feature_matching"] = feature_matching_loss(fake_features, real_features)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        commitment = cfg.losses.commitment * out.commitment + cfg.losses.codebook * out.codebook
        if cfg.losses.balancer:
            commitment.backward(retain_graph=True)
            self.balancer.backward(losses, out.audio)
        else:
            weighted = sum(self.balancer.weights[k] * v for k, v in losses.items())
            (weighted + commitment).backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.codec.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.codec)
        metrics = {k: float(v.detach()) for k, v in losses.items()}
        metrics.update(
            commitment=float(out.commitment.detach()), n_q=out.n_q, lr=self.learning_rate(self.step)
        )
        if isinstance(out.codebook, torch.Tensor):
            metrics["codebook"] = float(out.codebook.detach())
        if adversarial:
            coin = float(torch.rand((), generator=self.generator))
            if coin < cfg.losses.disc_update_prob:
                real_logits, _ = self._discriminate(real)
                fake_logits, _ = self._discriminate(fake.detach())
                disc_loss = hinge_discriminator_loss(real_logits, fake_logits)
                self.disc_optimizer.zero_grad(set_to_none=True)
                disc_loss.backward()
                self.disc_optimizer.step()
                metrics["discriminator"] = float(disc_loss.detach())
        self.step += 1
        self.totals["audio_seconds"] += x.shape[0] * x.shape[-1] / cfg.model.sample_rate
        return metrics

    @torch.no_grad()
    def averaged_codec(self) -> TrainableCodec:
        """The codec with the averaged weights (``optim.ema_decay``) and the live codebooks.

        Before the first step it averaged, its weights are the live ones.

        Raises:
            ValueError: The recipe keeps no average (``optim.ema_decay`` is 0).
        """
        if self.averaged is None:
            raise ValueError("optim.ema_decay is 0: there are no averaged weights")
        module = self.averaged.module
        if int(self.averaged.n_averaged) == 0:
            for mine, live in zip(module.parameters(), self.codec.parameters(), strict=True):
                mine.copy_(live)
        for mine, live in zip(module.buffers(), self.codec.buffers(), strict=True):
            mine.copy_(live)
        return module

    @torch.no_grad()
    def validate(
        self, bandwidths: tuple[float, ...] | None = None, averaged: bool = False
    ) -> dict[str, Any]:
        """Mel distance and SI-SDR on the fixed held-out crops, per category and bandwidth.

        Args:
            bandwidths: kbps to measure at; by default every bandwidth the model serves.
            averaged: Measure the averaged weights (:meth:`averaged_codec`).
        """
        if self.valid_sampler is None:
            return {}
        bandwidths = bandwidths or self.config.model.target_bandwidths
        codec = self.averaged_codec() if averaged else self.codec
        codec.eval()
        x, categories = self.valid_sampler.fixed_set(self.config.data.validation_items)
        x = x.to(self.device)
        results: dict[str, Any] = {}
        for bandwidth in bandwidths:
            n_q = self.config.model.num_codebooks(bandwidth)
            audio = torch.cat([codec(chunk, n_q, self.generator).audio for chunk in x.split(8)])
            mel = mel_distance(audio, x, self.config.model.sample_rate).cpu()
            sdr = si_sdr(audio, x).cpu()
            for category in sorted(set(categories)):
                mask = torch.tensor([c == category for c in categories])
                results[f"{bandwidth:g}kbps/{category}"] = {
                    "mel_distance": round(float(mel[mask].mean()), 4),
                    "si_sdr": round(float(sdr[mask].mean()), 3),
                }
        return results

    def _modules(self) -> dict[str, torch.nn.Module]:
        """What a checkpoint holds, by key prefix."""
        modules = {"codec": self.codec, "disc": self.disc}
        return modules if self.averaged is None else {**modules, "averaged": self.averaged}

    def save(self) -> None:
        """Writes the resumable checkpoint."""
        save_training_state(
            self.checkpoint_path,
            modules=self._modules(),
            optimizers={"codec": self.optimizer, "disc": self.disc_optimizer},
            generator=self.generator,
            meta=self.meta(),
        )

    def meta(self) -> dict[str, Any]:
        """The run's counters and settings, as checkpoints store them (JSON-serialisable)."""
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "balancer": self.balancer.state_dict(),
            "rewarm_start": self.rewarm_start,
            "totals": dict(self.totals),
        }

    def restore_meta(self, meta: dict[str, Any]) -> None:
        """Takes counters from :meth:`meta` of a checkpoint of the same architecture."""
        check_same_model(meta["config"]["model"], self.config.model)
        self.step = int(meta["step"])
        self.balancer.load_state_dict(meta["balancer"])
        self.rewarm_start = meta.get("rewarm_start")
        self.totals.update(meta.get("totals", {}))

    def _load(self) -> None:
        meta = load_training_state(
            self.checkpoint_path,
            modules=self._modules(),
            optimizers={"codec": self.optimizer, "disc": self.disc_optimizer},
            generator=self.generator,
            optional=("averaged",),  # checkpoints from before optim.ema_decay
        )
        try:
            self.restore_meta(meta)
        except ValueError as exc:
            raise ValueError(f"{self.checkpoint_path}: {exc}") from None

    def _log(self, record: dict[str, Any], echo: bool = True) -> None:
        with open(self.run_dir / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if echo and self.echo is not None:
            self.echo(record)

    def run(self, until: int | None = None, seconds: float | None = None) -> dict[str, Any]:
        """Trains up to step ``until`` (default: the config's ``steps``), checkpointing on the way.

        Args:
            until: Last step (exclusive) of this call.
            seconds: Stop after this much wall time (a time-boxed slice), or None.

        Stops early too when :attr:`stop_requested` is set (a signal handler sets it): the
        step in progress ends first. A checkpoint is always written at the end, so a run
        stopped any of these ways resumes.

        Returns:
            The last logged training record (losses averaged over its window), or {}.
        """
        cfg = self.config
        until = cfg.steps if until is None else min(until, cfg.steps)
        started, window, last = time.perf_counter(), [], {}
        while self.step < until and not self.stop_requested:
            if seconds is not None and time.perf_counter() - started >= seconds:
                break
            step_started = time.perf_counter()
            try:
                metrics = self.train_step()
            except ValueError:  # a file that can't be read, before any update: keep the steps
                self.save()
                raise
            self.totals["train_seconds"] += time.perf_counter() - step_started
            window.append(metrics)
            if self.step % cfg.log_every == 0 or self.step == until:
                last = self._log_window(window, time.perf_counter() - started)
                window = []
            if cfg.validate_every and self.step % cfg.validate_every == 0:
                self._log({"step": self.step, "validation": self.validate()})
            if self.step % cfg.checkpoint_every == 0:
                self.save()
        if window:  # stopped between two log steps
            last = self._log_window(window, time.perf_counter() - started)
        if cfg.validate_every and self.step == cfg.steps and self.step % cfg.validate_every:
            self._log({"step": self.step, "validation": self.validate()})  # the final weights
        self.save()
        return last

    def _log_window(self, window: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
        """Logs the metrics of the steps in ``window``, each averaged; returns the record."""
        keys = dict.fromkeys(k for m in window for k in m if k != "n_q")
        averaged = {
            k: round(sum(m[k] for m in window if k in m) / sum(k in m for m in window), 6)
            for k in keys
        }
        record = {"step": self.step, "seconds": round(elapsed, 1), **averaged}
        self._log(record)
        return record
