"""What a job queue holds and answers, whichever store keeps it (SQLite in
:mod:`audiotok.serve.jobs`, Redis in :mod:`audiotok.serve.redis_jobs`): the job's record,
what a submission did, what a sweep for dead workers did, and the queue's one refusal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FINAL = ("done", "failed", "cancelled", "expired")
"""The statuses a job never leaves (but ``done`` for ``expired``, when its cache TTL ends)."""


@dataclass
class Job:
    """One row of the queue (times are Unix seconds)."""

    id: str
    key: str
    batch_key: str
    model: str
    request: dict[str, Any]
    status: str
    created: float
    started: float | None
    finished: float | None
    deadline: float
    progress: float
    attempts: int
    lease_until: float | None
    subscribers: int
    result: str | None
    error_code: str | None
    error: str | None
    cache_hit: bool
    batch_size: int | None
    worker: str | None = None  # HOST:PID of the process that claimed it last

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """The job of a database row (its request stored as JSON, ``cache_hit`` as 0 or 1)."""
        values = dict(row)
        values["request"] = json.loads(values["request"])
        values["cache_hit"] = bool(values["cache_hit"])
        return cls(**values)


@dataclass
class Submitted:
    """What :meth:`JobStore.submit` did: the job, whether it was a cache hit or a join, and the
    ``subscription`` that cancels this request's interest once (None for a cache hit): joined
    requests share the job's id, so a cancel by id alone may drop another's (a retried
    ``DELETE``), one by subscription never does."""

    job: Job
    cache_hit: bool = False
    joined: bool = False
    subscription: str | None = None


MAX_ATTEMPTS = 3
"""Runs of a job whose worker died (its lease ran out) before it is failed as ``poisoned``."""
POISONED_MESSAGE = f"its worker died in each of {MAX_ATTEMPTS} runs; not run again"


@dataclass(frozen=True)
class Lost:
    """What :meth:`JobStore.requeue_lost` did: jobs queued again, ids of jobs failed poisoned."""

    requeued: int
    poisoned: list[str]


class QueueFull(Exception):
    """More jobs are queued than the service accepts."""
