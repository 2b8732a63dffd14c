"""The job queue in Redis: the same queue as :class:`~.jobs.JobStore`, shared across nodes.

Replicas of the service on several machines (Ray Serve on a cluster) can't share SQLite (its
locks don't hold on network file systems); they share a Redis instead, e.g. Debian's
``redis-server``. Every operation that changes a job is one Lua script
(:mod:`.redis_scripts`), which Redis runs atomically, so two workers never claim the same job
and a cache hit never reads a job that is being expired. Times come from Redis' clock
(``TIME``), not the replicas': a lease written by one machine and judged by another agrees on
what "now" is (workers judge batch waits and deadlines by it too, ``RedisJobStore.now``).

Keys, all under one hash tag (``{audiotok}:``, so a Redis Cluster keeps them in one slot)::

    job:ID            the job, JSON (the fields of Job, its request a JSON string)
    seq               a counter: the order jobs were queued in (a requeued job keeps its place)
    queued            zset ID -> seq, every queued job
    queued:BATCHKEY   zset ID -> seq, the queued jobs of one batch key (a claim takes these)
    running           zset ID -> lease end: lost leases are a range query
    done              zset ID -> finish time: expiry is a range query
    inflight:KEY      zset ID -> seq, the queued or running jobs of a cache key (dedup joins)
    cached:KEY        the ID of the latest job of KEY that ran to the end (cache hits)
    refs              hash result name -> done jobs that use it (delete it at 0)
    subs              hash subscription -> job ID: a request's interest, dropped once
    counts            hash status -> jobs
    generators        hash name -> JSON, the generators workers run (front ends read it)
    changed           a pub/sub channel: a message after every change (workers wake at once)

Jobs and their records are kept as SQLite keeps its rows: finished jobs stay readable.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import uuid
from typing import Any

from . import redis_scripts as scripts
from .job_records import MAX_ATTEMPTS, POISONED_MESSAGE, Job, Lost, QueueFull, Submitted


def _job(text: str | bytes) -> Job:
    values = json.loads(text)
    values.pop("seq", None)
    values["request"] = json.loads(values["request"])
    values["cache_hit"] = bool(values["cache_hit"])
    return Job(**values)


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return "+inf" if math.isinf(value) and value > 0 else repr(float(value))


class RedisJobStore:
    """The queue in the Redis at ``url`` (``redis://HOST:PORT/DB``), with the interface of
    :class:`~.jobs.JobStore` (read its methods' contracts there).

    Args:
        url: Where Redis is (``redis://``, ``rediss://`` or ``unix://``).
        cache_ttl: Seconds a finished result answers identical requests.
        max_queued: Queued jobs beyond which :meth:`submit` raises :class:`QueueFull`.
        prefix: The keys' prefix: services with different prefixes share one Redis apart.

    Raises:
        ConnectionError: Redis does not answer (a one-line message: the service can't start).
    """

    def __init__(
        self,
        url: str,
        cache_ttl: float = 86_400.0,
        max_queued: int = 256,
        prefix: str = "{audiotok}:",
    ) -> None:
        import redis

        self.cache_ttl, self.max_queued, self.prefix = cache_ttl, max_queued, prefix
        self.client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ConnectionError(f"{url}: Redis does not answer ({exc})") from None
        self._scripts = {
            name: self.client.register_script(scripts.COMMON + body)
            for name, body in (
                ("submit", scripts.SUBMIT),
                ("claim", scripts.CLAIM),
                ("renew", scripts.RENEW),
                ("finish", scripts.FINISH),
                ("fail", scripts.FAIL),
                ("cancel", scripts.CANCEL),
                ("requeue_lost", scripts.REQUEUE_LOST),
                ("expire", scripts.EXPIRE),
            )
        }
        # Waiters (workers, gRPC streams) wait on this condition as on the SQLite store's; a
        # thread turns every change any replica publishes into a notification here.
        self.changed = threading.Condition(threading.RLock())
        self._closing = threading.Event()
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(f"{prefix}changed")
        self._listener = threading.Thread(target=self._listen, name="audiotok-redis", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        import redis

        while not self._closing.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.5)
            except (redis.RedisError, ValueError, OSError):  # closed, or Redis went away
                if self._closing.wait(0.5):
                    return
                continue
            if message is not None:
                with self.changed:
                    self.changed.notify_all()

    def _run(self, name: str, *args: Any) -> Any:
        return self._scripts[name](args=[self.prefix, *args])

    def close(self) -> None:
        self._closing.set()
        self._listener.join(timeout=2)
        self._pubsub.close()
        self.client.close()

    def get(self, job_id: str) -> Job | None:
        text = self.client.get(f"{self.prefix}job:{job_id}")
        return _job(text) if text else None

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
        cached = ""
        if use_cache:
            # The script checks the candidate is still done and fresh; whether its result is
            # still kept is the caller's to say, so it is asked first, outside the script.
            candidate = self.client.get(f"{self.prefix}cached:{key}")
            job = self.get(candidate.decode()) if candidate else None
            if (
                job
                and job.status == "done"
                and (result_exists is None or result_exists(job.result))
            ):
                cached = job.id
        token = uuid.uuid4().hex
        outcome, value = self._run(
            "submit", uuid.uuid4().hex, key, batch_key, model, json.dumps(request),
            _number(deadline), "1" if use_cache else "0", cached, self.max_queued,
            _number(self.cache_ttl), token,
        )  # fmt: skip
        outcome, value = outcome.decode(), value.decode()
        if outcome == "full":
            raise QueueFull(f"{value} jobs are queued")
        with self.changed:
            self.changed.notify_all()
        job = self.get(value)
        hit = outcome == "hit"
        return Submitted(job, cache_hit=hit, joined=outcome == "joined",
                         subscription=None if hit else token)  # fmt: skip

    def claim(self, max_batch: int, lease: float, batch_key: str | None = None) -> list[Job]:
        worker = f"{socket.gethostname()}:{os.getpid()}"
        texts = self._run("claim", max_batch, _number(lease), worker, batch_key or "")
        return [_job(text) for text in texts]

    def now(self) -> float:
        """Redis' clock (``TIME``), which job times are in: a replica's own may be off."""
        seconds, micros = self.client.time()
        return seconds + micros / 1e6

    def queued_like(self, batch_key: str) -> int:
        return int(self.client.zcard(f"{self.prefix}queued:{batch_key}"))

    def oldest_queued(self) -> Job | None:
        first = self.client.zrange(f"{self.prefix}queued", 0, 0)
        return self.get(first[0].decode()) if first else None

    def renew(self, ids: list[str], lease: float, progress: float) -> set[str]:
        alive = self._run("renew", _number(lease), _number(progress), *ids)
        return {i.decode() for i in alive}

    def finish(self, job_id: str, result: str) -> bool:
        return bool(int(self._run("finish", job_id, result)))

    def fail(self, job_id: str, code: str, message: str) -> None:
        self._run("fail", job_id, code, message)

    def cancel(self, job_id: str, subscription: str | None = None) -> Job | None:
        text = self._run("cancel", job_id, subscription or "")
        return _job(text) if text else None

    def requeue_lost(self, now: float | None = None) -> Lost:
        requeued, *poisoned = self._run("requeue_lost", _number(now), MAX_ATTEMPTS,
                                        POISONED_MESSAGE)  # fmt: skip
        return Lost(int(requeued), [job_id.decode() for job_id in poisoned])

    def expire(self, now: float | None = None) -> list[str]:
        names = self._run("expire", _number(self.cache_ttl), _number(now))
        return [name.decode() for name in names]

    def publish_generators(self, catalogue: dict[str, dict[str, Any]]) -> None:
        if catalogue:
            mapping = {name: json.dumps(info) for name, info in catalogue.items()}
            self.client.hset(f"{self.prefix}generators", mapping=mapping)

    def generator_catalogue(self) -> dict[str, dict[str, Any]]:
        rows = self.client.hgetall(f"{self.prefix}generators")
        return {name.decode(): json.loads(info) for name, info in rows.items()}

    def counts(self) -> dict[str, int]:
        rows = self.client.hgetall(f"{self.prefix}counts")
        return {k.decode(): int(v) for k, v in rows.items() if int(v)}
