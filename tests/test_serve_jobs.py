"""The service's job queue on its own: batching keys, dedup, cache, leases, cancel, expiry."""

from __future__ import annotations

import pytest

from audiotok.serve.jobs import JobStore, QueueFull
from audiotok.serve.requests import GenerateRequest, batch_key, cache_key


def submit(store: JobStore, prompt: str, duration: float = 1.0, **options):
    request = GenerateRequest(prompt=prompt, duration=duration).job_requests("m", "w")[0]
    return store.submit(cache_key(request), batch_key(request), "m", request, 30.0, **options)


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite", cache_ttl=100.0, max_queued=5)
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
    assert store.requeue_lost() == 0
    assert store.requeue_lost(now=store.get(job.id).lease_until + 1) == 1
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
