"""One running service: its settings, state folder, queue, models, metrics and worker.

The state folder holds ``jobs.sqlite`` (the queue) and ``results/`` (generated audio, named by
cache key). One service owns it at a time (an exclusive lock on ``lock``), so at start-up the
jobs the previous owner left running are queued again at once instead of after their lease,
and results past the cache's TTL are deleted (then once a minute by the worker).

With ``store`` (``--store redis://HOST:PORT/DB``) the queue and the results are in Redis
instead (redis_jobs.py, results.py), shared by every service that names the same Redis, on any
machine: replicas of one deployment, or front ends without generators and workers without
HTTP traffic (serve/ray_app.py). The state folder then only holds scratch files.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AudiotokError
from .job_records import Lost
from .jobs import JobStore
from .models import Generator, ServedModels
from .observability import Metrics, json_logger, log_event
from .redis_jobs import RedisJobStore
from .results import RedisResults, ResultFiles
from .worker import GenerationWorker, report_lost

try:
    import fcntl
except ImportError:  # Windows: no flock; two services on one folder are then not caught
    fcntl = None


@dataclass
class ServeSettings:
    """What ``audiotok serve`` is told (its options, with these defaults)."""

    state: Path = field(default_factory=lambda: Path(".audiotok-serve"))
    max_batch: int = 8
    batch_wait_ms: float = 50.0
    api_key: str | None = None
    max_upload_bytes: int = 64 * 1024 * 1024
    max_duration: float = 120.0
    # Audio per codec request (compress, encode, decompress, decode): a few kB of .atok or
    # tokens can stand for a day of audio, an hour of work under the codec lock.
    max_audio_seconds: float = 3600.0
    # Accelerator memory: jobs x seconds in one batch at most.
    max_batch_seconds: float = 480.0
    max_queued: int = 256
    cache_ttl: float = 24 * 3600.0
    # Deadline: 2 minutes for 60 s of audio, never under 30 s.
    deadline_per_second: float = 2.0
    min_deadline: float = 30.0
    lease: float = 30.0
    # gRPC on host:grpc_port beside HTTP, on the same queue (grpc_service.py); None: off.
    host: str = "127.0.0.1"
    grpc_port: int | None = None
    # Several processes on one state folder (Ray Serve replicas): they share the queue and
    # the cache, and a job whose process dies is taken over when its lease runs out.
    shared: bool = False
    # A Redis URL: the queue and the results in Redis, shared across machines (implies shared).
    store: str | None = None
    # "all": routes and a generation worker; "front": routes only, generators known from the
    # store's catalogue and run by "worker" services (no routes) on the same store.
    role: str = "all"

    def __post_init__(self) -> None:
        self.state = Path(self.state)  # a str from Python (the CLI passes a Path)
        # An empty key (AUDIOTOK_API_KEY= in a deployment file) would turn authentication off;
        # a non-ASCII one could never match (HTTP headers reach us as latin-1).
        key = self.api_key
        if key is not None and (not key or not key.isascii() or not key.isprintable()):
            raise ServiceError("the API key must be printable ASCII and not empty")

    def deadline(self, duration: float) -> float:
        return max(self.min_deadline, self.deadline_per_second * duration)


class ServiceError(AudiotokError):
    """The service can't start (its state folder is in use or unusable, a bad setting)."""


class Service:
    """Everything a service's routes use; :meth:`start` and :meth:`stop` bracket its life."""

    def __init__(self, settings: ServeSettings, models: ServedModels) -> None:
        self.settings, self.models = settings, models
        self.metrics = Metrics()
        self.logger = json_logger()
        self.tmp = settings.state / "tmp"
        self.store: JobStore | RedisJobStore | None = None
        self.results: ResultFiles | RedisResults | None = None
        self.worker: GenerationWorker | None = None
        self.grpc_server: Any = None  # started beside the HTTP app (serve.app.open_service)
        self.running = False
        self._lock_file: Any = None

    def start(self) -> None:
        """Takes the state folder, opens the queue, starts the worker; on any error, lets go
        of what it took (a retry in the same process would find the folder locked).

        Raises:
            ServiceError: Another service holds the state folder.
        """
        try:
            self._start()
        except BaseException:
            self._release()
            raise

    def _start(self) -> None:
        state = self.settings.state
        for folder in (state, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        if self.settings.store:
            self._open_redis(self.settings.store)
        else:
            self._open_folder(state)
        # A lone service owns the folder: what the last owner left running is ours to run
        # again now. Shared queues can't tell a dead process's jobs from a live one's: leases do.
        shared = self.settings.shared or self.settings.store
        lost = Lost(0, []) if shared else self.store.requeue_lost(now=float("inf"))
        report_lost(self.logger, self.metrics, lost, "restart")
        for name in self.store.expire():
            self.results.delete(name)
        log_event(
            self.logger,
            "service started",
            state=str(state),
            requeued=lost.requeued,
            codecs=sorted(self.models.codecs),
            generators=sorted(self.models.generators),
            pid=os.getpid(),
        )
        if self.settings.role == "front":
            self.refresh_catalogue()
        elif self.models.generators:
            self.store.publish_generators(self.models.catalogue())
            self.worker = GenerationWorker(
                self.store,
                self.models,
                self.results,
                self.metrics,
                self.logger,
                max_batch=self.settings.max_batch,
                batch_wait=self.settings.batch_wait_ms / 1000,
                lease=self.settings.lease,
                max_batch_seconds=self.settings.max_batch_seconds,
            )
            self.worker.start()
        self.running = True

    def _open_folder(self, state: Path) -> None:
        self._lock_file = open(state / "lock", "a+")  # noqa: SIM115  (held for the service's life)
        if fcntl is not None:
            # Replicas share the folder (a shared lock); a lone service owns it (exclusive).
            mode = fcntl.LOCK_SH if self.settings.shared else fcntl.LOCK_EX
            try:
                fcntl.flock(self._lock_file.fileno(), mode | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ServiceError(f"{state}: another service is using this state folder") from None
            except OSError as exc:  # no locks on this file system (ENOLCK: some NFS mounts)
                raise ServiceError(
                    f"{state}: can't lock the state folder ({exc.strerror})"
                ) from None
        try:
            self.store = JobStore(
                state / "jobs.sqlite", self.settings.cache_ttl, self.settings.max_queued
            )
        except sqlite3.Error as exc:  # not a database, a folder, a read-only file...
            raise ServiceError(f"{state / 'jobs.sqlite'}: {exc}") from None
        self.results = ResultFiles(state / "results")

    def _open_redis(self, url: str) -> None:
        try:
            store = RedisJobStore(url, self.settings.cache_ttl, self.settings.max_queued)
        except ImportError:
            raise ServiceError("--store needs the redis package: pip install redis") from None
        except (ConnectionError, ValueError) as exc:
            raise ServiceError(f"--store: {exc}") from None
        self.store = store
        self.results = RedisResults(store.client, store.prefix, self.settings.cache_ttl, self.tmp)

    def stop(self) -> None:
        self.running = False
        self._release()
        log_event(self.logger, "service stopped")

    def _release(self) -> None:
        """Stops the worker, closes the queue, lets go of the state folder."""
        if self.worker is not None:
            self.worker.stop()
            self.worker.join(timeout=10)
        if self.store is not None:
            self.store.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def refresh_catalogue(self) -> None:
        """A front end: the generators that workers run now, from the store's catalogue."""
        if self.settings.role == "front" and self.store is not None:
            self.models.catalogued(self.store.generator_catalogue())

    def generator(self, name: str | None) -> Generator:
        """The generator a request for ``name`` runs on (rollouts drawn; a front end asks the
        catalogue first, so workers started since are known)."""
        self.refresh_catalogue()
        return self.models.generator(name)

    def result_exists(self, name: str | None) -> bool:
        return self.results is not None and self.results.exists(name)

    def update_queue_gauges(self) -> None:
        counts = self.store.counts() if self.store else {}
        for status in ("queued", "running", "done", "failed", "cancelled", "expired"):
            self.metrics.queue_depth.labels(status).set(counts.get(status, 0))
