"""The service's job queue on its own: batching keys, dedup, cache, leases, cancel, expiry;
every test runs on both stores, SQLite and Redis (the same contract)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

from audiotok.serve.job_records import QueueFull
from audiotok.serve.jobs import JobStore
from audiotok.serve.requests import GenerateRequest, batch_key, cache_key


def submit(store: JobStore, prompt: str, duration: float = 1.0, **options):
    request = GenerateRequest(prompt=prompt, duration=duration).job_requests("m", "w")[0]
    return store.submit(cache_key(request), batch_key(request), "m", request, 30.0, **options)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = JobStore(tmp_path / "jobs.sqlite", cache_ttl=100.0, max_queued=5)
    else:
        from audiotok.serve.redis_jobs import RedisJobStore

        url = request.getfixturevalue("redis_url")
        store = RedisJobStore(url, cache_ttl=100.0, max_queued=5, prefix=f"{{{uuid.uuid4().hex}}}:")
    yield store
    store.close()


def test_keys_cover_every_parameter_and_batches_ignore_the_prompt():
    base = GenerateRequest(prompt="a", duration=2).job_requests("m", "w")[0]
    assert cache_key(base) == cache_key(dict(reversed(base.items())))  # canonical JSON
    for change in ({"prompt": "b"}, {"seed": 1}, {"top_k": 5}, {"format": "flac"},
                   {"weights": "w2"}, {"model": "m2"}):  # fmt: skip
        assert cache_key({**base, **change}) != cache_key(base), change
    assert batch_key({**base, "prompt": "b"}) == batch_key(base)
    assert batch_key({**base, "seed": 1}) != batch_key(base)
    with pytest.raises(ValueError, match="not both"):
        GenerateRequest(prompt="a", prompts=["b"])


def test_claims_batch_compatible_jobs_oldest_first(store):
    a, b = submit(store, "a").job, submit(store, "b").job
    other = submit(store, "c", duration=2.0).job
    d = submit(store, "d").job
    batch = store.claim(max_batch=8, lease=10)
    assert [j.id for j in batch] == [a.id, b.id, d.id] and {j.status for j in batch} == {"running"}
    assert [j.id for j in store.claim(8, 10)] == [other.id]
    assert store.claim(8, 10) == []


def test_identical_jobs_join_and_cancel_only_when_nobody_waits(store):
    first = submit(store, "x")
    second = submit(store, "x")
    assert second.joined and second.job.id == first.job.id and second.job.subscribers == 2
    assert store.cancel(first.job.id).status == "queued"  # the other request still waits
    assert store.cancel(first.job.id).status == "cancelled"
    assert not submit(store, "x").joined  # a cancelled job is not joined


def test_results_are_cached_until_they_expire(store, tmp_path):
    job = submit(store, "x").job
    (running,) = store.claim(1, 10)
    store.finish(running.id, "x.wav")
    hit = submit(store, "x", result_exists=lambda name: name == "x.wav")
    assert hit.cache_hit and hit.job.status == "done" and hit.job.result == "x.wav"
    assert hit.job.id != job.id
    assert not submit(store, "x", use_cache=False).cache_hit
    assert not submit(store, "x", result_exists=lambda name: False).cache_hit  # file deleted
    assert store.expire(now=store.get(job.id).finished + 101) == ["x.wav"]
    assert store.get(job.id).status == "expired"


def test_lost_leases_are_requeued_and_renewals_keep_them(store):
    job = submit(store, "x").job
    store.claim(1, lease=10)
    assert store.renew([job.id], lease=10, progress=0.5) == {job.id}
    assert store.requeue_lost().requeued == 0
    assert store.requeue_lost(now=store.get(job.id).lease_until + 1).requeued == 1
    again = store.get(job.id)
    assert again.status == "queued" and again.progress == 0
    assert store.claim(1, 10)[0].attempts == 2


def test_failed_and_cancelled_jobs_leave_the_batch(store):
    a, b = submit(store, "a").job, submit(store, "b").job
    store.claim(8, 10)
    store.fail(a.id, "deadline_exceeded", "too slow")
    store.cancel(b.id)
    assert store.renew([a.id, b.id], 10, 0.1) == set()
    store.finish(a.id, "a.wav")  # too late: a failed job stays failed
    assert store.get(a.id).status == "failed" and store.get(a.id).error_code == "deadline_exceeded"


def test_queue_cap(store):
    for i in range(5):
        submit(store, str(i))
    with pytest.raises(QueueFull):
        submit(store, "one more")
    assert submit(store, "0").joined  # joining adds no job


def test_a_request_of_several_prompts_is_queued_whole_or_not_at_all(store):
    from types import SimpleNamespace

    from audiotok.serve.errors import ApiError
    from audiotok.serve.job_routes import submit as submit_request
    from audiotok.serve.service import ServeSettings

    generator = SimpleNamespace(name="m", weights="w", frame_rate=50.0)
    counted, records = [], []
    counter = SimpleNamespace(inc=lambda: counted.append(1))
    logger = logging.getLogger("test-all-or-nothing")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler := logging.Handler())
    handler.emit = records.append
    service = SimpleNamespace(
        settings=ServeSettings(),
        store=store,
        generator=lambda name: generator,
        metrics=SimpleNamespace(cache_hits=counter, dedup_joins=counter),
        logger=logger,
        result_exists=lambda name: False,
    )
    waiting = submit(store, "p1")  # another client's job, which this request joins
    for i in range(3):
        submit(store, f"other {i}")
    body = GenerateRequest(prompts=["p1", "p2", "p3"], duration=1.0)
    with pytest.raises(ApiError) as refused:  # p1 joins, p2 is the 5th job, p3 one too many
        submit_request(service, body, None)
    assert refused.value.status == 429
    assert store.counts()["queued"] == 4  # p2 withdrawn
    assert store.get(waiting.job.id).subscribers == 1  # p1's join withdrawn, its job kept
    assert counted == [] and records == [], "a withdrawn join or job was counted or logged"
    too_short = GenerateRequest(prompt="x", duration=0.01)  # half a frame at 50 Hz
    with pytest.raises(ApiError, match="at least one frame"):
        submit_request(service, too_short, None)
    with pytest.raises(ValueError, match="finite"):
        GenerateRequest.model_validate_json('{"prompt": "x", "temperature": Infinity}')


def test_counts_and_the_generators_catalogue(store):
    a, b = submit(store, "a").job, submit(store, "b").job
    submit(store, "a")  # a join adds no job
    store.claim(1, 10)
    store.finish(a.id, "a.wav")
    store.cancel(b.id)
    assert store.counts() == {"done": 1, "cancelled": 1}
    assert store.generator_catalogue() == {}
    info = {"weights": "w", "sample_rate": 32000, "max_duration": 30.0}
    store.publish_generators({"m": info})
    store.publish_generators({"m": {**info, "weights": "w2"}, "n": info})  # the latest wins
    assert store.generator_catalogue() == {"m": {**info, "weights": "w2"}, "n": info}


@pytest.fixture
def two_clients(redis_url):
    """Two connections to one Redis queue, as two replicas on two machines have."""
    from audiotok.serve.redis_jobs import RedisJobStore

    prefix = f"{{{uuid.uuid4().hex}}}:"
    stores = [RedisJobStore(redis_url, max_queued=1000, prefix=prefix) for _ in range(2)]
    yield stores
    for store in stores:
        store.close()


def test_replicas_racing_on_one_redis_queue_claim_each_job_once(two_clients):
    ids = [submit(two_clients[i % 2], str(i)).job.id for i in range(60)]
    claimed: list[list[str]] = [[], [], [], []]

    def take(slot: int) -> None:
        store = two_clients[slot % 2]
        while batch := store.claim(max_batch=3, lease=10):
            claimed[slot].extend(job.id for job in batch)

    threads = [threading.Thread(target=take, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = [job_id for slot in claimed for job_id in slot]
    assert sorted(every) == sorted(ids), "every job claimed exactly once"
    assert two_clients[0].counts() == {"running": 60}


def test_a_change_on_one_replica_wakes_the_others(two_clients):
    waiter, writer = two_clients
    with waiter.changed:
        start = time.monotonic()
        threading.Timer(0.2, lambda: submit(writer, "x")).start()
        assert waiter.changed.wait(timeout=10), "no notification came"
    assert time.monotonic() - start < 5
    assert waiter.oldest_queued().request["prompt"] == "x"


def test_redis_that_does_not_answer_is_one_line():
    from audiotok.serve.redis_jobs import RedisJobStore

    with pytest.raises(ConnectionError, match="Redis does not answer"):
        RedisJobStore("redis://127.0.0.1:1/0")


@pytest.fixture(params=["files", "redis"])
def results(request, tmp_path):
    from audiotok.serve.results import RedisResults, ResultFiles

    if request.param == "files":
        return ResultFiles(tmp_path / "results")
    import redis

    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    return RedisResults(client, f"{{{uuid.uuid4().hex}}}:", 100.0, tmp_path / "scratch")


def test_a_result_is_written_once(results):
    """A job run again (its lease lost) keeps the audio it delivered first: clients that
    fetched it, and cache hits sharing it, must not see it change."""
    import numpy as np

    results.write("j.wav", np.full((1, 800), 0.1, np.float32), 8000)
    with results.open("j.wav") as f:
        first = f.read()
    results.write("j.wav", np.full((1, 800), -0.3, np.float32), 8000)
    with results.open("j.wav") as f:
        assert f.read() == first


def test_a_cache_hit_keeps_the_shared_audio_as_long_as_itself(redis_url, tmp_path):
    """Redis: the audio expired with the job that made it, while a hit on it read done."""
    import numpy as np
    import redis

    from audiotok.serve.redis_jobs import RedisJobStore
    from audiotok.serve.results import RedisResults

    prefix = f"{{{uuid.uuid4().hex}}}:"
    store = RedisJobStore(redis_url, cache_ttl=100.0, max_queued=5, prefix=prefix)
    results = RedisResults(redis.Redis.from_url(redis_url), prefix, 100.0, tmp_path)
    submit(store, "x")
    (running,) = store.claim(1, 10)
    results.write("x.wav", np.zeros((1, 800), np.float32), 8000)
    store.finish(running.id, "x.wav")
    store.client.pexpire(f"{prefix}result:x.wav", 1000)  # the first job's TTL nearly out
    assert submit(store, "x", result_exists=results.exists).cache_hit
    assert store.client.pttl(f"{prefix}result:x.wav") > 150_000
    store.close()


def test_a_batch_is_claimed_for_the_clips_it_was_sized_for(store):
    """The worker sizes a batch for its oldest job's clips; when that job went (cancelled,
    or taken by another replica) the claim took the next oldest's, longer clips, past the
    memory cap (8 clips of 120 s for a cap of 480 job-seconds)."""
    short = submit(store, "short", duration=10.0).job
    longs = [submit(store, f"long {i}", duration=120.0).job for i in range(4)]
    store.cancel(short.id)
    assert store.claim(8, 10, short.batch_key) == []
    assert len(store.claim(8, 10)) == 4 and longs  # without a key: the oldest's, as before


def test_no_memory_cap_sizes_batches_by_max_batch():
    """inf (no cap, the worker's default) made every batch a NaN: the queue stalled."""
    from audiotok.serve.worker import GenerationWorker

    worker = GenerationWorker.__new__(GenerationWorker)
    worker.max_batch, worker.max_batch_seconds = 8, float("inf")
    assert worker.batch_size(10.0) == 8
    worker.max_batch_seconds = 480.0
    assert worker.batch_size(120.0) == 4


def test_a_job_whose_worker_dies_each_time_is_failed_not_run_forever(store):
    """It was claimed first again after every restart, ahead of all other jobs; its failure is
    logged and counted as any other job's (it was neither)."""
    import logging

    from audiotok.serve.job_records import MAX_ATTEMPTS, Lost
    from audiotok.serve.observability import Metrics
    from audiotok.serve.worker import report_lost

    job, other = submit(store, "poison").job, submit(store, "other", duration=2.0).job
    for attempt in range(1, MAX_ATTEMPTS + 1):
        (running,) = store.claim(1, lease=10)
        assert running.id == job.id and running.attempts == attempt
        lost = store.requeue_lost(now=store.get(job.id).lease_until + 1)  # its worker died
        assert lost == (Lost(1, []) if attempt < MAX_ATTEMPTS else Lost(0, [job.id]))
    records, metrics = [], Metrics()
    logger = logging.getLogger("test-poisoned")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler := logging.Handler())
    handler.emit = records.append
    report_lost(logger, metrics, lost, "lease expired")
    assert [(r.getMessage(), r.fields["job"], r.fields["error_code"]) for r in records] == [
        ("job failed", job.id, "poisoned")
    ]
    assert metrics.errors.labels("poisoned")._value.get() == 1
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.error_code == "poisoned"
    assert f"{MAX_ATTEMPTS} runs" in failed.error
    assert [j.id for j in store.claim(8, 10)] == [other.id]


def test_the_worker_waits_by_the_stores_clock(redis_url, monkeypatch):
    """Job times are Redis' (TIME) on a shared queue; a replica whose own clock was 3 s
    behind waited 3 s more for every batch (on SQLite both are this machine's)."""
    from audiotok.serve import worker as worker_module
    from audiotok.serve.redis_jobs import RedisJobStore
    from audiotok.serve.worker import GenerationWorker

    store = RedisJobStore(redis_url, cache_ttl=100.0, max_queued=5, prefix=f"{{{uuid.uuid4()}}}:")
    submit(store, "x")
    real = time.time
    monkeypatch.setattr(worker_module.time, "time", lambda: real() - 3.0)
    worker = GenerationWorker(store, None, None, None, logging.getLogger("t"), max_batch=4,
                              batch_wait=0.05)  # fmt: skip
    monkeypatch.setattr(worker, "_housekeeping", lambda: None)
    started = time.monotonic()
    assert len(worker._next_batch()) == 1
    assert time.monotonic() - started < 1.0
    store.close()


def test_a_subscription_cancels_its_own_interest_once(store):
    """Joined requests share the job's id: a client retrying its cancel by id dropped the
    other client's interest too, and the job was cancelled under it."""
    first, second = submit(store, "x"), submit(store, "x")
    assert second.joined and second.job.id == first.job.id
    assert first.subscription and second.subscription != first.subscription
    job_id = first.job.id
    for _ in range(2):  # the same cancel, retried
        assert store.cancel(job_id, first.subscription).status == "queued"
    assert store.cancel(job_id, "not-a-subscription").status == "queued"
    assert store.get(job_id).subscribers == 1
    assert store.cancel(job_id, second.subscription).status == "cancelled"
    hit_source = submit(store, "y").job
    (running,) = store.claim(1, 10)
    store.finish(running.id, "y.wav")
    assert submit(store, "y").subscription is None and hit_source.id == running.id  # a hit


def test_a_job_cancelled_while_its_audio_is_written_is_not_reported_done(store, tmp_path):
    """The worker checked a job's status, wrote its audio, then finished it: a cancel in between
    gave a "job done" log line, quality samples for a cancelled job and a file never deleted."""
    import numpy as np

    from audiotok.serve.observability import Metrics
    from audiotok.serve.results import ResultFiles
    from audiotok.serve.worker import GenerationWorker

    job = submit(store, "x").job
    (running,) = store.claim(1, lease=10)
    results, records = ResultFiles(tmp_path / "results"), []
    logger = logging.getLogger("test-undelivered")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler := logging.Handler())
    handler.emit = records.append
    worker = GenerationWorker(store, None, results, Metrics(), logger)
    real_write = results.write

    def write_then_cancel(name, audio, rate):
        real_write(name, audio, rate)
        store.cancel(job.id)  # the client's DELETE lands while the file is written

    results.write = write_then_cancel
    worker._deliver(running, np.zeros((1, 3200), np.float32), 32_000, 1, 0.1)
    assert store.get(job.id).status == "cancelled"
    assert not list(results.folder.glob("*.wav")), "the undelivered audio is left on disk"
    assert [r.getMessage() for r in records] == ["job not delivered"]
    assert worker.metrics.generated_seconds._value.get() == 0
    assert store.finish(job.id, "late.wav") is False


def test_generated_audio_is_written_as_audiocrafts_example(results, monkeypatch):
    """-14 LUFS with the tanh soft clip (`audiotok generate` writes so too), not a hard clip."""
    import numpy as np

    from audiotok.serve import results as results_module

    calls = []
    real = results_module.write_audio

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(results_module, "write_audio", spy)
    results.write("a.wav", np.full((1, 3200), 0.5, np.float32), 32_000)
    assert calls == [{"strategy": "loudness", "loudness_compressor": True}]


def test_a_failed_start_lets_go_of_the_state_folder(tmp_path, monkeypatch):
    """A start that failed after taking the folder's lock kept it: a retry in the same process
    was told another service was using the folder."""
    from audiotok.serve.models import ServedModels
    from audiotok.serve.service import ServeSettings, Service

    def broken(self, now=None):
        raise RuntimeError("the queue's sweep failed")

    settings = ServeSettings(state=tmp_path / "state")
    failed = Service(settings, ServedModels({}, {}))  # kept: its open files stay open
    with monkeypatch.context() as m:
        m.setattr(JobStore, "requeue_lost", broken)
        with pytest.raises(RuntimeError, match="sweep failed"):
            failed.start()
    service = Service(settings, ServedModels({}, {}))
    service.start()  # the lock is free again
    service.stop()
