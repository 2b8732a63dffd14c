"""The generation worker: takes batches of compatible jobs from the queue and runs them.

A batch is the oldest queued job and the jobs queued with the same batch key (model,
duration, sampling parameters, seed) within ``batch_wait`` seconds of it, up to ``max_batch``:
one batched LM pass generates all their prompts, and each job gets its own clip. At every LM
step the worker renews the jobs' leases, records progress, fails the jobs past their
deadline and drops cancelled ones; a batch with no job left stops at that step, freeing the
accelerator. Results are written atomically under the job's cache key, so running a job twice
(after a lost lease) writes the same file.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from .job_records import POISONED_MESSAGE, Job, Lost
from .jobs import JobStore
from .models import ServedModels, UnknownModel
from .observability import Metrics, log_event
from .tracing import span


class _BatchStopped(Exception):
    """Every job of the running batch was cancelled or ran out of time."""


class GenerationWorker(threading.Thread):
    """One worker thread; a service runs one per generator device.

    Args:
        store: The queue (SQLite or Redis).
        models: The service's models.
        results: Where results are kept (files or Redis, serve/results.py).
        metrics, logger: Where the worker reports.
        max_batch: Jobs per LM pass at most.
        max_batch_seconds: Jobs times seconds per LM pass at most (accelerator memory).
        batch_wait: Seconds a batch waits, from its oldest job's arrival, for more.
        lease: Seconds a claimed job stays ours without a renewal.
    """

    def __init__(
        self,
        store: JobStore,
        models: ServedModels,
        results: Any,
        metrics: Metrics,
        logger: logging.Logger,
        max_batch: int = 8,
        batch_wait: float = 0.05,
        lease: float = 30.0,
        max_batch_seconds: float = float("inf"),
    ) -> None:
        super().__init__(name="audiotok-generation-worker", daemon=True)
        self.store, self.models, self.results = store, models, results
        self.metrics, self.logger = metrics, logger
        self.max_batch, self.batch_wait, self.lease = max_batch, batch_wait, lease
        self.max_batch_seconds = max_batch_seconds
        self.stopping = threading.Event()
        self.batches = 0
        self._expired_at = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                jobs = self._next_batch()
                if jobs:
                    self._run_batch(jobs)
            except Exception:  # a worker must outlive any one batch; the jobs were failed
                self.logger.exception("worker error")
                self.stopping.wait(1.0)

    def _housekeeping(self) -> None:
        """Queues again the jobs of dead workers; once a minute, deletes expired results."""
        report_lost(self.logger, self.metrics, self.store.requeue_lost(), "lease expired")
        if time.monotonic() - self._expired_at > 60.0:
            self._expired_at = time.monotonic()
            for name in self.store.expire():
                self.results.delete(name)

    def _next_batch(self) -> list[Job]:
        """Waits for a job, then for compatible ones until the batch is full or its time is up."""
        self._housekeeping()
        first = self.store.oldest_queued()
        with self.store.changed:
            if first is None:
                self.store.changed.wait(0.5)
                return []
            size = self.batch_size(first.request["duration"])
            until = first.created + self.batch_wait
            while (
                not self.stopping.is_set()
                and self.store.queued_like(first.batch_key) < size
                and (left := until - self.store.now()) > 0  # job times: the store's clock
            ):
                self.store.changed.wait(left)
        # Of first's batch key, which size was made for: the oldest job now may be another
        # (first cancelled, or taken by another replica) of longer clips, past the memory cap.
        return self.store.claim(size, self.lease, first.batch_key)

    def batch_size(self, duration: float) -> int:
        """Jobs of ``duration`` seconds per batch: ``max_batch``, fewer for long clips."""
        if not math.isfinite(self.max_batch_seconds):  # no cap (inf // x is nan)
            return self.max_batch
        return max(1, min(self.max_batch, int(self.max_batch_seconds // duration)))

    def _run_batch(self, jobs: list[Job]) -> None:
        request = jobs[0].request
        try:
            generator = self.models.version(request["model"])
        except UnknownModel as exc:  # queued before a restart without that model
            for job in jobs:
                self._fail(job, "unknown_model", str(exc))
            return
        for job in jobs:
            self.metrics.queue_wait_seconds.observe(max(0.0, job.started - job.created))
        alive = {job.id for job in jobs}
        renewed = [time.monotonic()]
        # Deadlines against the store's clock (Redis' for a shared queue: a replica whose own
        # clock is behind gave jobs extra time, one ahead failed them at their first step),
        # read once: this machine's clock keeps time between steps.
        skew = self.store.now() - time.time()

        def on_step(done: int, total: int) -> None:
            if self.stopping.is_set():  # shutting down: the next start runs the batch again
                raise _BatchStopped
            now = time.time() + skew
            for job in jobs:
                if job.id in alive and now - job.started > job.deadline:
                    alive.discard(job.id)
                    self.metrics.timeouts.inc()
                    self._fail(
                        job,
                        "deadline_exceeded",
                        f"stopped after {job.deadline:.3g} s, its deadline",
                    )
            if time.monotonic() - renewed[0] > 0.2 or done == total:
                alive.intersection_update(self.store.renew(sorted(alive), self.lease, done / total))
                renewed[0] = time.monotonic()
            if not alive:
                raise _BatchStopped

        start = time.monotonic()
        # The span covers the deliveries too (each job's span is its child); the lock, the LM.
        with span("generate batch", model=generator.name, batch_size=len(jobs)):
            with generator.lock:
                wav = self._generate(generator, jobs, request, on_step, alive)
            # Every LM pass is counted, also one stopped or failed part way.
            elapsed = time.monotonic() - start
            self.metrics.run_seconds.observe(elapsed)
            self.metrics.batch_size.observe(len(jobs))
            if wav is None:
                return
            self.batches += 1
            wav = wav.detach().cpu().float().numpy()
            for i, job in enumerate(jobs):
                current = self.store.get(job.id)
                if current is None or current.status != "running":
                    continue  # cancelled or timed out after the last step
                with span(
                    "job",
                    job=job.id,
                    model=job.model,
                    attempts=job.attempts,
                    queue_wait=job.started - job.created,
                ):
                    self._deliver(job, wav[i], generator.sample_rate, len(jobs), elapsed)

    def _generate(
        self, generator: Any, jobs: list[Job], request: dict, on_step: Any, alive: set[str]
    ) -> Any:
        """One batched LM pass: the audio ``[B, C, T]``, or None when it was stopped (every
        job cancelled or past its deadline) or failed (its jobs failed)."""
        model = generator.model
        model.set_generation_params(
            use_sampling=request["use_sampling"],
            top_k=request["top_k"],
            top_p=request["top_p"],
            temperature=request["temperature"],
            duration=request["duration"],
            cfg_coef=request["cfg_coef"],
            seed=request["seed"],
            **(
                {"extend_stride": min(18.0, generator.max_duration / 2)}
                if request["duration"] > generator.max_duration
                else {}
            ),
        )
        model.set_custom_progress_callback(on_step)
        try:
            wav = model.generate([job.request["prompt"] for job in jobs])
        except _BatchStopped:
            log_event(self.logger, "batch stopped", jobs=[j.id for j in jobs])
            return None
        except Exception as exc:  # a model error fails this batch's jobs, not the service
            for job in jobs:
                if job.id in alive:
                    self._fail(job, "generation_failed", f"{type(exc).__name__}: {exc}")
            return None
        finally:
            model.set_custom_progress_callback(None)
        return wav

    def _deliver(
        self, job: Job, audio: Any, sample_rate: int, batch_size: int, elapsed: float
    ) -> None:
        """Writes one job's clip (once: idempotent) and marks the job done.

        Named by the job, not by its request's key: a later run of the same request
        (``cache: false``, or after the cache's TTL) must not change the audio of jobs already
        done, which cache hits share by name."""
        name = f"{job.id}.{job.request['format']}"
        self.results.write(name, audio, sample_rate)
        if not self.store.finish(job.id, name):  # cancelled or failed while being written
            current = self.store.get(job.id)
            if current is None or current.result != name:  # not done by an earlier run
                self.results.delete(name)
            log_event(
                self.logger,
                "job not delivered",
                job=job.id,
                model=job.model,
                status=current.status if current else None,
            )
            return
        monitors = self.metrics.observe_audio(audio, sample_rate)
        log_event(
            self.logger,
            "job done",
            job=job.id,
            model=job.model,
            status="done",
            queue_wait=round(job.started - job.created, 4),
            run_seconds=round(elapsed, 4),
            batch_size=batch_size,
            attempts=job.attempts,
            cache_hit=False,
            **{k: round(v, 4) for k, v in monitors.items()},
        )

    def _fail(self, job: Job, code: str, message: str) -> None:
        self.store.fail(job.id, code, message)
        self.metrics.errors.labels(code).inc()
        log_event(
            self.logger,
            "job failed",
            job=job.id,
            model=job.model,
            status="failed",
            error_code=code,
            error=message,
        )


def report_lost(logger: logging.Logger, metrics: Metrics, lost: Lost, reason: str) -> None:
    """Logs the jobs :meth:`JobStore.requeue_lost` queued again, and each job it failed as
    poisoned as a failed job (a log line and ``audiotok_errors_total{kind="poisoned"}``)."""
    if lost.requeued:
        log_event(logger, "jobs requeued", count=lost.requeued, reason=reason)
    for job_id in lost.poisoned:
        metrics.errors.labels("poisoned").inc()
        log_event(logger, "job failed", job=job_id, status="failed", error_code="poisoned",
                  error=POISONED_MESSAGE)  # fmt: skip
