"""The job queue in Redis: the same queue as :class:`~.jobs.JobStore`, shared across nodes.

Replicas of the service on several machines (Ray Serve on a cluster) can't share SQLite (its
locks don't hold on network file systems); they share a Redis instead, e.g. Debian's
``redis-server``. Every operation that changes a job is one Lua script, which Redis runs
atomically, so two workers never claim the same job and a cache hit never reads a job that is
being expired. Times come from Redis' clock (``TIME``), not the replicas': a lease written by
one machine and judged by another agrees on what "now" is.

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

from .jobs import MAX_ATTEMPTS, POISONED_MESSAGE, Job, QueueFull, Submitted

_COMMON = """
local P = ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function load(id)
  local s = redis.call('GET', P .. 'job:' .. id)
  if s then return cjson.decode(s) end
  return nil
end
local function save(job) redis.call('SET', P .. 'job:' .. job.id, cjson.encode(job)) end
local function move(job, status)
  redis.call('HINCRBY', P .. 'counts', job.status, -1)
  redis.call('HINCRBY', P .. 'counts', status, 1)
  job.status = status
end
local function unqueue(job)
  redis.call('ZREM', P .. 'queued', job.id)
  redis.call('ZREM', P .. 'queued:' .. job.batch_key, job.id)
  redis.call('ZREM', P .. 'running', job.id)
  redis.call('ZREM', P .. 'inflight:' .. job.key, job.id)
end
local function changed() redis.call('PUBLISH', P .. 'changed', '1') end
"""

# ARGV: P, id, key, batch_key, model, request, deadline, use_cache, cached id or '',
# max_queued, cache_ttl
_SUBMIT = """
local id, key, bk = ARGV[2], ARGV[3], ARGV[4]
local t = now()
if ARGV[8] == '1' then
  if ARGV[9] ~= '' then
    local hit = load(ARGV[9])
    if hit and hit.status == 'done' and hit.finished > t - tonumber(ARGV[11]) then
      local job = {id = id, key = key, batch_key = bk, model = ARGV[5], request = ARGV[6],
        status = 'done', created = t, started = t, finished = t, deadline = tonumber(ARGV[7]),
        progress = 1, attempts = 0, lease_until = cjson.null, subscribers = 1,
        result = hit.result, error_code = cjson.null, error = cjson.null, cache_hit = true,
        batch_size = hit.batch_size, worker = cjson.null, seq = 0}
      save(job)
      redis.call('HINCRBY', P .. 'counts', 'done', 1)
      redis.call('ZADD', P .. 'done', t, id)
      redis.call('HINCRBY', P .. 'refs', hit.result, 1)
      -- The audio is kept as long as this job is done, as SQLite keeps its file for every
      -- done job using it (RedisResults sets TTL + 60 s when it writes it).
      redis.call('PEXPIRE', P .. 'result:' .. hit.result,
        math.floor((tonumber(ARGV[11]) + 60) * 1000))
      changed()
      return {'hit', id}
    end
  end
  local live = redis.call('ZRANGE', P .. 'inflight:' .. key, 0, 0)[1]
  if live then
    local job = load(live)
    job.subscribers = job.subscribers + 1
    save(job)
    return {'joined', live}
  end
end
local queued = redis.call('ZCARD', P .. 'queued')
if queued >= tonumber(ARGV[10]) then return {'full', tostring(queued)} end
local seq = redis.call('INCR', P .. 'seq')
save({id = id, key = key, batch_key = bk, model = ARGV[5], request = ARGV[6], status = 'queued',
  created = t, started = cjson.null, finished = cjson.null, deadline = tonumber(ARGV[7]),
  progress = 0, attempts = 0, lease_until = cjson.null, subscribers = 1, result = cjson.null,
  error_code = cjson.null, error = cjson.null, cache_hit = false, batch_size = cjson.null,
  worker = cjson.null, seq = seq})
redis.call('HINCRBY', P .. 'counts', 'queued', 1)
redis.call('ZADD', P .. 'queued', seq, id)
redis.call('ZADD', P .. 'queued:' .. bk, seq, id)
redis.call('ZADD', P .. 'inflight:' .. key, seq, id)
changed()
return {'queued', id}
"""

# ARGV: P, max_batch, lease, worker, batch key or "" (the oldest job's) -> the claimed jobs, JSON
_CLAIM = """
local bk = ARGV[5]
if bk == '' then
  local first = redis.call('ZRANGE', P .. 'queued', 0, 0)[1]
  if not first then return {} end
  bk = load(first).batch_key
end
local ids = redis.call('ZRANGE', P .. 'queued:' .. bk, 0, tonumber(ARGV[2]) - 1)
local t, out = now(), {}
for _, id in ipairs(ids) do
  local job = load(id)
  move(job, 'running')
  job.started, job.lease_until, job.progress = t, t + tonumber(ARGV[3]), 0
  job.attempts, job.batch_size, job.worker = job.attempts + 1, #ids, ARGV[4]
  save(job)
  redis.call('ZREM', P .. 'queued', id)
  redis.call('ZREM', P .. 'queued:' .. bk, id)
  redis.call('ZADD', P .. 'running', job.lease_until, id)
  table.insert(out, cjson.encode(job))
end
changed()
return out
"""

# ARGV: P, lease, progress, ids... -> the ids still running
_RENEW = """
local t, out = now(), {}
for i = 4, #ARGV do
  local job = load(ARGV[i])
  if job and job.status == 'running' then
    job.lease_until, job.progress = t + tonumber(ARGV[2]), tonumber(ARGV[3])
    save(job)
    redis.call('ZADD', P .. 'running', job.lease_until, job.id)
    table.insert(out, job.id)
  end
end
changed()
return out
"""

# ARGV: P, id, result
_FINISH = """
local job = load(ARGV[2])
if not job or job.status ~= 'running' then return 0 end
unqueue(job)
move(job, 'done')
job.finished, job.progress, job.result, job.lease_until = now(), 1, ARGV[3], cjson.null
save(job)
redis.call('ZADD', P .. 'done', job.finished, job.id)
redis.call('HINCRBY', P .. 'refs', job.result, 1)
redis.call('SET', P .. 'cached:' .. job.key, job.id)
changed()
return 1
"""

# ARGV: P, id, code, message
_FAIL = """
local job = load(ARGV[2])
if not job or (job.status ~= 'queued' and job.status ~= 'running') then return 0 end
unqueue(job)
move(job, 'failed')
job.finished, job.error_code, job.error, job.lease_until = now(), ARGV[3], ARGV[4], cjson.null
save(job)
changed()
return 1
"""

# ARGV: P, id -> the job, JSON, or nil
_CANCEL = """
local job = load(ARGV[2])
if not job then return nil end
if job.status == 'queued' or job.status == 'running' then
  if job.subscribers > 1 then
    job.subscribers = job.subscribers - 1
  else
    unqueue(job)
    move(job, 'cancelled')
    job.finished, job.subscribers, job.lease_until = now(), 0, cjson.null
  end
  save(job)
  changed()
end
return cjson.encode(job)
"""

# ARGV: P, now or '' (Redis' clock), max attempts, poisoned message -> how many were queued again
_REQUEUE_LOST = """
local cutoff = ARGV[2]
if cutoff == '' then cutoff = tostring(now()) end
local ids = redis.call('ZRANGE', P .. 'running', '-inf', '(' .. cutoff, 'BYSCORE')
local requeued = 0
for _, id in ipairs(ids) do
  local job = load(id)
  if job.attempts >= tonumber(ARGV[3]) then  -- poisoned: see JobStore.requeue_lost
    unqueue(job)
    move(job, 'failed')
    job.finished, job.error_code, job.error = now(), 'poisoned', ARGV[4]
    job.lease_until = cjson.null
    save(job)
  else
    move(job, 'queued')
    job.lease_until, job.progress = cjson.null, 0
    save(job)
    redis.call('ZREM', P .. 'running', id)
    redis.call('ZADD', P .. 'queued', job.seq, id)
    redis.call('ZADD', P .. 'queued:' .. job.batch_key, job.seq, id)
    requeued = requeued + 1
  end
end
if #ids > 0 then changed() end
return requeued
"""

# ARGV: P, cache_ttl, now or '' -> result names no done job uses any more
_EXPIRE = """
local t = ARGV[3]
if t == '' then t = now() else t = tonumber(t) end
local ids = redis.call('ZRANGE', P .. 'done', '-inf', '(' .. tostring(t - tonumber(ARGV[2])),
  'BYSCORE')
local out = {}
for _, id in ipairs(ids) do
  local job = load(id)
  move(job, 'expired')
  save(job)
  redis.call('ZREM', P .. 'done', id)
  if redis.call('GET', P .. 'cached:' .. job.key) == id then
    redis.call('DEL', P .. 'cached:' .. job.key)
  end
  if redis.call('HINCRBY', P .. 'refs', job.result, -1) <= 0 then
    redis.call('HDEL', P .. 'refs', job.result)
    table.insert(out, job.result)
  end
end
return out
"""


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
            name: self.client.register_script(_COMMON + body)
            for name, body in (
                ("submit", _SUBMIT),
                ("claim", _CLAIM),
                ("renew", _RENEW),
                ("finish", _FINISH),
                ("fail", _FAIL),
                ("cancel", _CANCEL),
                ("requeue_lost", _REQUEUE_LOST),
                ("expire", _EXPIRE),
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
        outcome, value = self._run(
            "submit", uuid.uuid4().hex, key, batch_key, model, json.dumps(request),
            _number(deadline), "1" if use_cache else "0", cached, self.max_queued,
            _number(self.cache_ttl),
        )  # fmt: skip
        outcome, value = outcome.decode(), value.decode()
        if outcome == "full":
            raise QueueFull(f"{value} jobs are queued")
        with self.changed:
            self.changed.notify_all()
        job = self.get(value)
        return Submitted(job, cache_hit=outcome == "hit", joined=outcome == "joined")

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

    def finish(self, job_id: str, result: str) -> None:
        self._run("finish", job_id, result)

    def fail(self, job_id: str, code: str, message: str) -> None:
        self._run("fail", job_id, code, message)

    def cancel(self, job_id: str) -> Job | None:
        text = self._run("cancel", job_id)
        return _job(text) if text else None

    def requeue_lost(self, now: float | None = None) -> int:
        return int(self._run("requeue_lost", _number(now), MAX_ATTEMPTS, POISONED_MESSAGE))

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
