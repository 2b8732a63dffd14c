"""The persistent job queue of generation: SQLite, with leases, a result cache and dedup.

One row per job. A job is ``queued`` until a worker claims it with others of the same
``batch_key`` (same model, duration and sampling parameters), then ``running`` under a lease
the worker renews at every step. A job whose lease runs out (its worker died) is queued again:
delivery is at least once, and results are written idempotently, under the job's id (a
job run again keeps the file it wrote first; cache hits share the file of the job they hit).

Cache and dedup use the request ``key`` (a hash of the canonical request, the model's weights
included): a request whose key finished within the cache's TTL is answered by a new job row
that is ``done`` at once (``cache_hit``), and one whose key is queued or running joins that
job (``subscribers`` counts who waits on it; cancelling stops it only when nobody else does).

State diagram::

    queued --claim--> running --finish--> done --TTL--> expired
       |                 |  \\--fail/deadline--> failed
       \\----cancel------+---> cancelled           (lease lost: running --> queued)
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .job_records import FINAL, MAX_ATTEMPTS, POISONED_MESSAGE, Job, Lost, QueueFull, Submitted

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    deadline REAL NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    subscribers INTEGER NOT NULL DEFAULT 1,
    result TEXT,
    error_code TEXT,
    error TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, status);
CREATE TABLE IF NOT EXISTS generators (name TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (token TEXT PRIMARY KEY, job TEXT NOT NULL);
"""


class JobStore:
    """The queue in ``path`` (SQLite, write-ahead log), shared by the web and worker threads.

    Args:
        path: The database file (created with its folder).
        cache_ttl: Seconds a finished result answers identical requests.
        max_queued: Queued jobs beyond which :meth:`submit` raises :class:`QueueFull`.
    """

    def __init__(self, path: Path, cache_ttl: float = 86_400.0, max_queued: int = 256) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_ttl, self.max_queued = cache_ttl, max_queued
        # One connection behind a lock: SQLite serialises writers anyway, and the web
        # threads and the workers each hold it for a few statements at a time.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "worker" not in columns:  # a queue written before jobs recorded their worker
            self._db.execute("ALTER TABLE jobs ADD COLUMN worker TEXT")
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.changed.notify_all()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def submit(
        self,
        key: str,
        batch_key: str,
        model: str,
        request: dict[str, Any],
        deadline: float,
        use_cache: bool = True,
        result_exists: Any = None,
    ) -> Submitted:
        """Queues a job, or answers it from the cache, or joins an identical one in flight.

        Args:
            result_exists: ``f(result name) -> bool``: whether a cached result is still on
                disk (a result deleted by hand is generated again).
        """
        now = time.time()
        new_id = uuid.uuid4().hex
        with self._transaction() as db:
            if use_cache:
                row = db.execute(
                    "SELECT * FROM jobs WHERE key = ? AND status = 'done' AND finished > ? "
                    "AND cache_hit = 0 ORDER BY finished DESC LIMIT 1",
                    (key, now - self.cache_ttl),
                ).fetchone()
                if row and (result_exists is None or result_exists(row["result"])):
                    db.execute(
                        "INSERT INTO jobs (id, key, batch_key, model, request, status, created, "
                        "started, finished, deadline, progress, result, cache_hit, batch_size) "
                        "VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, 1, ?, 1, ?)",
                        (
                            new_id,
                            key,
                            batch_key,
                            model,
                            json.dumps(request),
                            now,
                            now,
                            now,
                            deadline,
                            row["result"],
                            row["batch_size"],
                        ),
                    )
                    return Submitted(self._row(db, new_id), cache_hit=True)
                row = db.execute(
                    "SELECT * FROM jobs WHERE key = ? AND status IN ('queued', 'running') "
                    "ORDER BY created LIMIT 1",
                    (key,),
                ).fetchone()
                if row:
                    db.execute(
                        "UPDATE jobs SET subscribers = subscribers + 1 WHERE id = ?", (row["id"],)
                    )
                    token = self._subscribe(db, row["id"])
                    return Submitted(self._row(db, row["id"]), joined=True, subscription=token)
            queued = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            if queued >= self.max_queued:
                raise QueueFull(f"{queued} jobs are queued")
            db.execute(
                "INSERT INTO jobs (id, key, batch_key, model, request, status, created, deadline) "
                "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                (new_id, key, batch_key, model, json.dumps(request), now, deadline),
            )
            return Submitted(self._row(db, new_id), subscription=self._subscribe(db, new_id))

    @staticmethod
    def _subscribe(db: sqlite3.Connection, job_id: str) -> str:
        token = uuid.uuid4().hex
        db.execute("INSERT INTO subscriptions (token, job) VALUES (?, ?)", (token, job_id))
        return token

    def claim(self, max_batch: int, lease: float, batch_key: str | None = None) -> list[Job]:
        """The oldest queued job and up to ``max_batch - 1`` more of its ``batch_key`` (or of
        ``batch_key``, the one ``max_batch`` was sized for), now ``running`` under a lease of
        ``lease`` seconds; [] when none is queued."""
        now = time.time()
        with self._transaction() as db:
            first = db.execute(
                "SELECT batch_key FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1"
            ).fetchone()
            if batch_key is not None:
                first = {"batch_key": batch_key}
            if first is None:
                return []
            ids = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' AND batch_key = ? "
                    "ORDER BY created LIMIT ?",
                    (first["batch_key"], max_batch),
                )
            ]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            db.execute(
                f"UPDATE jobs SET status = 'running', started = ?, lease_until = ?, progress = 0, "
                f"attempts = attempts + 1, batch_size = ?, worker = ? WHERE id IN ({marks})",
                (now, now + lease, len(ids), f"{socket.gethostname()}:{os.getpid()}", *ids),
            )
            return [self._row(db, i) for i in ids]

    def now(self) -> float:
        """The store's clock (job times are in it): this machine's, for SQLite."""
        return time.time()

    def queued_like(self, batch_key: str) -> int:
        """Queued jobs of ``batch_key`` (a worker waits for more before it claims)."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND batch_key = ?", (batch_key,)
            ).fetchone()[0]

    def oldest_queued(self) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1"
            ).fetchone()
        return Job.from_row(row) if row else None

    def renew(self, ids: list[str], lease: float, progress: float) -> set[str]:
        """Extends the leases of the running jobs among ``ids`` and records their progress;
        returns the ids still running (the others were cancelled or failed meanwhile)."""
        now, marks = time.time(), ",".join("?" * len(ids))
        with self._transaction() as db:
            db.execute(
                f"UPDATE jobs SET lease_until = ?, progress = ? "
                f"WHERE status = 'running' AND id IN ({marks})",
                (now + lease, progress, *ids),
            )
            rows = db.execute(
                f"SELECT id FROM jobs WHERE status = 'running' AND id IN ({marks})", ids
            )
            return {r["id"] for r in rows}

    def finish(self, job_id: str, result: str) -> bool:
        """Marks a running job done with its result file (a job no longer running is left:
        False)."""
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE jobs SET status = 'done', finished = ?, progress = 1, result = ?, "
                    "lease_until = NULL WHERE id = ? AND status = 'running'",
                    (time.time(), result, job_id),
                ).rowcount
            )

    def fail(self, job_id: str, code: str, message: str) -> None:
        """Marks a queued or running job failed with an error code and a one-line message."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET status = 'failed', finished = ?, error_code = ?, error = ?, "
                "lease_until = NULL WHERE id = ? AND status IN ('queued', 'running')",
                (time.time(), code, message, job_id),
            )

    def cancel(self, job_id: str, subscription: str | None = None) -> Job | None:
        """One subscriber fewer; the job is cancelled when none is left (if not final). With
        the ``subscription`` of a submission, only that one, once: again, or another job's,
        it changes nothing."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] in FINAL:
                return Job.from_row(row) if row else None
            if subscription is not None:
                dropped = db.execute(
                    "DELETE FROM subscriptions WHERE token = ? AND job = ?", (subscription, job_id)
                )
                if not dropped.rowcount:
                    return Job.from_row(row)
            if row["subscribers"] > 1:
                db.execute("UPDATE jobs SET subscribers = subscribers - 1 WHERE id = ?", (job_id,))
            else:
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished = ?, subscribers = 0, "
                    "lease_until = NULL WHERE id = ?",
                    (time.time(), job_id),
                )
            return self._row(db, job_id)

    def requeue_lost(self, now: float | None = None) -> Lost:
        """Queues again the running jobs whose lease ran out (their worker died), but fails
        those run :data:`MAX_ATTEMPTS` times already (``poisoned``: a job that kills its
        worker would otherwise run first forever, ahead of every other)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            poisoned = [r["id"] for r in db.execute(
                "SELECT id FROM jobs WHERE status = 'running' AND lease_until < ? "
                "AND attempts >= ?", (now, MAX_ATTEMPTS),
            )]  # fmt: skip
            db.executemany(
                "UPDATE jobs SET status = 'failed', finished = ?, error_code = 'poisoned', "
                "error = ?, lease_until = NULL WHERE id = ?",
                [(now, POISONED_MESSAGE, job_id) for job_id in poisoned],
            )
            cursor = db.execute(
                "UPDATE jobs SET status = 'queued', lease_until = NULL, progress = 0 "
                "WHERE status = 'running' AND lease_until < ?",
                (now,),
            )
            return Lost(cursor.rowcount, poisoned)

    def expire(self, now: float | None = None) -> list[str]:
        """Marks results older than the cache's TTL expired; returns their result names
        that no other live job still uses (for the caller to delete)."""
        cutoff = (time.time() if now is None else now) - self.cache_ttl
        with self._transaction() as db:
            rows = db.execute(
                "SELECT DISTINCT result FROM jobs WHERE status = 'done' AND finished < ?",
                (cutoff,),
            ).fetchall()
            db.execute(
                "UPDATE jobs SET status = 'expired' WHERE status = 'done' AND finished < ?",
                (cutoff,),
            )
            live = {
                r["result"] for r in db.execute("SELECT result FROM jobs WHERE status = 'done'")
            }
            return [r["result"] for r in rows if r["result"] and r["result"] not in live]

    def publish_generators(self, catalogue: dict[str, dict[str, Any]]) -> None:
        """Records the generators a worker runs (``ServedModels.catalogue``), for front ends
        that queue jobs for them without loading them."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO generators (name, info) VALUES (?, ?)",
                [(name, json.dumps(info)) for name, info in catalogue.items()],
            )

    def generator_catalogue(self) -> dict[str, dict[str, Any]]:
        """The generators workers published, by name (the latest publication of each)."""
        with self._lock:
            rows = self._db.execute("SELECT name, info FROM generators").fetchall()
        return {row["name"]: json.loads(row["info"]) for row in rows}

    def counts(self) -> dict[str, int]:
        """Jobs per status."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            return {status: n for status, n in rows}

    def _row(self, db: sqlite3.Connection, job_id: str) -> Job:
        return Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
