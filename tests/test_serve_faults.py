"""``audiotok serve`` through faults, over real HTTP: servers killed mid-job (SIGKILL: the
worker dies with its process) and what their jobs become, on one state folder restarted and
on one Redis shared by two servers. The servers are those of test_serve.py, started by the
tests; every wait is bounded (``TIMEOUT``) and polls.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile as sf
from test_serve import TIMEOUT, Server, error_of
from test_serve import generator_dir as generator_dir  # a fixture, shared with test_serve

pytest.importorskip("httpx")
pytest.importorskip("fastapi")


@pytest.fixture
def server_factory(tmp_path) -> Iterator:
    servers = []

    def start(*args: str, state: Path | None = None, wait: bool = True) -> Server:
        server = Server(state or tmp_path / "state", *args, wait=wait)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def restarted(tmp_path_factory, generator_dir) -> Iterator[SimpleNamespace]:
    """A server killed (SIGKILL: its worker dies with it) while it runs one job, two queued
    behind, then restarted on the same state folder: the server, the jobs once done, and the
    results folder's files then. The restart also takes the short deadlines of
    :func:`test_cancel_and_deadline` (a job keeps the deadline it was queued with)."""
    state = tmp_path_factory.mktemp("restarted") / "state"
    args = ("--generator", f"tiny={generator_dir}", "--max-batch", "1")
    first = Server(state, *args)
    servers = [first]
    try:
        ids = [
            first.client.post("/v1/generate", json={"prompt": f"p{i}", "duration": d}).json()["id"]
            for i, d in enumerate((4, 0.4, 0.4))
        ]
        deadline = time.monotonic() + TIMEOUT
        while first.client.get(f"/v1/jobs/{ids[0]}").json()["progress"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first.kill()
        second = Server(state, *args, "--min-deadline", "0.3", "--deadline-per-second", "0.01")
        servers.append(second)
        jobs = [second.wait_for(i) for i in ids]
        results = sorted((state / "results").iterdir())
        yield SimpleNamespace(server=second, jobs=jobs, results=results)
    finally:
        for server in servers:
            server.stop()


def test_killed_and_restarted_server_loses_nothing(restarted):
    """The server restarted after a kill finishes the running job and the queued ones, each
    once."""
    jobs = restarted.jobs
    assert jobs[0]["attempts"] == 2, "the job that was running ran again"
    assert len(restarted.results) == len(jobs), "one result per job, none twice"
    for job in jobs:
        assert restarted.server.client.get(job["result_url"]).status_code == 200


def test_cancel_and_deadline(restarted):
    server = restarted.server  # --max-batch 1 --min-deadline 0.3 --deadline-per-second 0.01
    names = ("audiotok_timeouts_total", 'audiotok_errors_total{kind="deadline_exceeded"}',
             'audiotok_errors_total{kind="http_504"}', "audiotok_batch_size_count")  # fmt: skip
    before = {name: server.metric(name) for name in names}  # the restart's jobs are done

    def more(name: str) -> float:
        return server.metric(name) - before[name]

    slow = server.client.post("/v1/generate", json={"prompt": "a", "duration": 20}).json()["id"]
    first, second = (
        server.client.post("/v1/generate", json={"prompt": "b", "duration": 1}).json()["jobs"][0]
        for _ in range(2)
    )  # the second joins the first, queued behind the slow one
    queued = first["id"]
    assert second["id"] == queued and second["joined"]
    for _ in range(2):  # a retried DELETE drops its own request's interest only
        url = f"/v1/jobs/{queued}?subscription={first['subscription']}"
        assert server.client.delete(url).json()["status"] in ("queued", "running")
    url = f"/v1/jobs/{queued}?subscription={second['subscription']}"
    assert server.client.delete(url).json()["status"] == "cancelled"
    job = server.wait_for(slow, ("failed",))
    assert job["error"]["code"] == "deadline_exceeded"
    assert error_of(server.client.get(f"/v1/jobs/{slow}/audio")) == (504, "deadline_exceeded")
    assert error_of(server.client.get(f"/v1/jobs/{queued}/audio")) == (409, "cancelled")
    assert more("audiotok_timeouts_total") == 1
    # The stopped pass is one LM pass; reading a failed job's audio is not one error more.
    assert more('audiotok_errors_total{kind="deadline_exceeded"}') == 1
    assert more('audiotok_errors_total{kind="http_504"}') == 0
    deadline = time.monotonic() + TIMEOUT
    while more("audiotok_batch_size_count") < 1:  # observed after the pass returns
        assert time.monotonic() < deadline, "a stopped pass was not counted"
        time.sleep(0.02)


def test_servers_on_one_redis_share_the_queue_and_take_over_a_dead_ones_job(
    server_factory, generator_dir, redis_url, tmp_path
):
    """Two servers with their own state folders (as on two machines) on one Redis: a job
    either accepts is visible to both, the one running it is killed, the other finishes it;
    results and the cache live in Redis, not in either folder."""
    args = ("--generator", f"tiny={generator_dir}", "--max-batch", "1", "--lease", "1",
            "--store", f"{redis_url}/5")  # fmt: skip
    servers = [server_factory(*args, state=tmp_path / name, wait=False) for name in ("a", "b")]
    for server in servers:  # started side by side
        server.wait_ready()
    job_id = servers[0].client.post("/v1/generate", json={"prompt": "p", "duration": 4}).json()
    job_id = job_id["id"]
    deadline = time.monotonic() + TIMEOUT
    while (job := servers[1].client.get(f"/v1/jobs/{job_id}").json())["progress"] == 0:
        assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
        time.sleep(0.02)
    pid = int(job["worker"].rsplit(":", 1)[1])
    (running,) = [s for s in servers if s.process.pid == pid]
    (other,) = [s for s in servers if s is not running]
    running.kill()
    done = other.wait_for(job_id)
    assert done["attempts"] == 2 and done["worker"].endswith(f":{other.process.pid}")
    audio = other.client.get(done["result_url"])
    assert audio.status_code == 200 and len(sf.read(io.BytesIO(audio.content))[0]) == 4 * 32_000
    again = other.client.post("/v1/generate", json={"prompt": "p", "duration": 4}).json()
    assert again["jobs"][0]["cache_hit"]
    assert not any((tmp_path / name / "results").exists() for name in ("a", "b"))
