"""``audiotok serve`` as a Ray Serve application, on the session's local Ray cluster, called
over real HTTP through Serve's proxy (loopback), in both layouts:

- ``folder``: two replicas, each with every model and a worker, on one shared state folder;
- ``redis``: the queue in Redis (Debian's redis-server, started by the test), one HTTP
  replica with the codec, and the generator in a replica of its own deployment, which it
  knows from the queue's catalogue.

Every route answers as the single process does. In the folder layout a replica killed
mid-job loses nothing: the other takes the job over when its lease runs out. Each replica is
a process importing Ray Serve and torch and loading its models (~9 s of CPU with the
generator), so the redis layout has one generator replica and no kill: a dead server's job
taken over by another on one Redis is test_serve_faults.py's, and a generator replica runs
the worker every service but a front end runs (``Service.start``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest
import soundfile as sf
from conftest import DATA

if importlib.util.find_spec("ray") is None:  # Serve not imported here: ~3 s on every worker
    pytest.skip("needs the ray extra", allow_module_level=True)
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.ray
TIMEOUT = 120.0
SPEECH = DATA / "speech_24k.flac"


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    from generate_reference import save_hf, tiny_musicgen

    return save_hf(tiny_musicgen(seed=7), tmp_path_factory.mktemp("generator") / "tiny")


@pytest.fixture(scope="module")
def serve_port(ray_cluster) -> Iterator[int]:
    """Ray Serve (its controller and HTTP proxy) on a free loopback port, started once for
    both layouts: each deploys its application and deletes it."""
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module", params=["folder", "redis"])
def served(request, serve_port, generator_dir, tmp_path_factory):
    from ray import serve

    from audiotok.serve.ray_app import application

    options = {
        "replicas": 2,
        "num_cpus": 0.5,
        "generators": f"tiny={generator_dir}",
        "state": str(tmp_path_factory.mktemp("ray-serve") / "state"),
        "lease": "2",
        "batch_wait_ms": "100",
        "max_batch": "4",
        # The replica-kill test's 4 s job runs twice; on a loaded 2-core machine it outran
        # the 30 s default deadline and failed instead of being taken over.
        "min_deadline": "240",
    }
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        options.update(replicas=1, generator_replicas=1, generator_num_cpus=0.5,
                       store=f"{redis_url}/6")  # fmt: skip
    serve.run(application(options), name="audiotok", route_prefix="/")
    client = httpx.Client(base_url=f"http://127.0.0.1:{serve_port}", timeout=TIMEOUT)
    yield client
    client.close()
    serve.delete("audiotok")


def wait_for(client, job_id: str) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} did not finish: {job}")


def test_routes_answer_as_the_single_process_does(served):
    assert served.get("/healthz").json()["status"] == "ok"
    assert served.get("/readyz").json()["generators"] == ["tiny"]
    speech = SPEECH.read_bytes()
    packed = served.post("/v1/compress", files={"audio": ("s.flac", speech)}, data={"bitrate": "6"})
    assert packed.status_code == 200 and packed.content[:4] == b"ATOK"
    audio = served.post("/v1/decompress?format=flac", content=packed.content)
    assert audio.status_code == 200
    assert len(sf.read(io.BytesIO(audio.content))[0]) == sf.info(SPEECH).frames
    tokens = served.post("/v1/encode", files={"audio": ("s.flac", speech)})
    assert served.post("/v1/decode", content=tokens.content).status_code == 200
    bad = served.post("/v1/generate", json={"prompt": "x", "model": "nope"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_model"
    assert served.get("/v1/jobs/nope").json()["error"]["code"] == "not_found"
    job = served.post("/v1/generate", json={"prompt": "a", "duration": 0.4, "seed": 1}).json()
    assert wait_for(served, job["id"])["status"] == "done"
    assert served.get(f"/v1/jobs/{job['id']}/audio").status_code == 200
    # The cache and the queue are shared: whichever replica answers, a repeat is a hit.
    again = served.post("/v1/generate", json={"prompt": "a", "duration": 0.4, "seed": 1}).json()
    assert again["jobs"][0]["cache_hit"]


@pytest.mark.parametrize("served", ["folder"], indirect=True)  # see the module's docstring
def test_a_replica_killed_mid_job_loses_nothing(served):
    job_id = served.post("/v1/generate", json={"prompt": "long", "duration": 4}).json()["id"]
    deadline = time.monotonic() + TIMEOUT
    while (job := served.get(f"/v1/jobs/{job_id}").json())["progress"] == 0:
        assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
        time.sleep(0.02)
    pid = int(job["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    done = wait_for(served, job_id)
    assert done["status"] == "done" and done["attempts"] == 2
    assert done["worker"] != job["worker"]
    assert served.get(f"/v1/jobs/{job_id}/audio").status_code == 200


def test_serve_run_arguments_take_their_options_types():
    """``serve run`` passes strings: max_upload_bytes="1000" made every upload a 500, and an
    unknown option (a typo) was dropped without a word."""
    from audiotok.serve.ray_app import _service_settings, typed_options

    options = typed_options({
        "max_upload_bytes": "1000", "deadline_per_second": "2.5", "grpc_port": "none",
        "shared": "false", "state": "/tmp/x", "replicas": "3", "generators": "a,b",
        "api_key": "k", "num_gpus": "0.5",
    })  # fmt: skip
    assert options["max_upload_bytes"] == 1000 and options["deadline_per_second"] == 2.5
    assert options["grpc_port"] is None and options["shared"] is False
    assert options["replicas"] == 3 and options["generators"] == ["a", "b"]
    settings = _service_settings(options, "all")
    assert settings.deadline(10.0) == 30.0 and settings.max_upload_bytes + 1 == 1001
    for bad, message in [
        ({"max_bach": "4"}, "unknown option 'max_bach'; the options are: "),
        ({"max_batch": "four"}, "option max_batch: int, not 'four'"),
        ({"max_batch": "2.5"}, "option max_batch: "),
        ({"shared": "maybe"}, "option shared: true or false, not 'maybe'"),
        ({"lease": "none"}, "option lease: a value is needed"),
    ]:
        with pytest.raises(ValueError, match=message):
            typed_options(bad)
