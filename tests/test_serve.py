"""``audiotok serve`` over real HTTP: server processes on loopback ports, serving the packaged
default codec and a tiny random MusicGen written by the tests.

A server start is most of a test's time (torch, transformers and the models: seconds of CPU),
so the checks that don't stop a server share ``served`` (key, rollout and spans on); servers
killed and restarted are in test_serve_faults.py. Every wait is bounded (``TIMEOUT``) and
polls; the servers are stopped at the end.
"""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import DATA

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

TIMEOUT = 90.0
SPEECH = DATA / "speech_24k.flac"
KEY = "s3cret"  # the API key of the shared servers, which their clients send


class Server:
    """A ``python -m audiotok serve`` process on a free loopback port, ready unless ``wait`` is
    false (then :meth:`wait_ready`: several servers start side by side); ``headers`` go with
    every request of its client."""

    def __init__(
        self, state: Path, *args: str, wait: bool = True, headers: dict | None = None
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state
        self.log = state.parent / f"{state.name}-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "audiotok",
            "serve",
            "--port",
            str(self.port),
            "--state",
            str(state),
            *args,
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=TIMEOUT, headers=headers)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail("the server did not start in time")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.client.close()

    def metric(self, name: str) -> float:
        """The value of one sample of ``/metrics`` (0 when absent)."""
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_for(self, job_id: str, statuses: tuple[str, ...] = ("done",)) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.05)
        pytest.fail(f"job {job_id} never reached {statuses}: {job}")


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory) -> Path:
    from generate_reference import save_hf, tiny_musicgen

    return save_hf(tiny_musicgen(seed=7), tmp_path_factory.mktemp("generator") / "tiny")


@pytest.fixture(scope="module")
def served(tmp_path_factory, generator_dir) -> Iterator[Server]:
    """One server with the default codec and the tiny generator, shared by the tests that don't
    stop it; its client sends the API key. The tiny weights are also served as ``music`` and
    ``music-v2``, every request for ``music`` rolled out to ``music-v2`` (requests for
    ``tiny``, the default, are untouched), and spans go to its log."""
    state = tmp_path_factory.mktemp("served") / "state"
    server = Server(
        state, "--api-key", KEY, "--generator", f"tiny={generator_dir}",
        "--generator", f"music={generator_dir}", "--generator", f"music-v2={generator_dir}",
        "--rollout", "music:music-v2=1", "--otel-exporter", "console",
        "--batch-wait-ms", "300", "--max-batch", "4", "--max-upload-mb", "2",
        headers={"Authorization": f"Bearer {KEY}"},
    )  # fmt: skip
    yield server
    server.stop()


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "\n" not in body["error"]["message"] and "Traceback" not in body["error"]["message"]
    return response.status_code, body["error"]["code"]


# --- operations ------------------------------------------------------------------------------


def test_health_readiness_metrics_and_docs(served):
    assert served.client.get("/healthz").json()["status"] == "ok"
    ready = served.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["generators"] == ["music", "music-v2", "tiny"]
    assert "audiotok_24khz" in ready["codecs"]
    served.client.get("/healthz")
    text = served.client.get("/metrics").text
    assert 'audiotok_request_seconds_count{route="/healthz",status="200"}' in text
    assert "audiotok_queue_depth" in text
    assert served.client.get("/docs").status_code == 200
    paths = served.client.get("/openapi.json").json()["paths"]
    for route in ("/v1/decompress", "/v1/decode"):  # "Try it out" can send the file
        assert "application/octet-stream" in paths[route]["post"]["requestBody"]["content"]
    unknown_model = paths["/v1/compress"]["post"]["responses"]["422"]
    assert unknown_model["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    # A failed validation is answered 400 with the error body, so FastAPI's own 422 (its
    # HTTPValidationError, on every route with parameters) must not be documented anywhere.
    schema_text = served.client.get("/openapi.json").text
    assert "HTTPValidationError" not in schema_text
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids)), "GET and HEAD of one route shared an operationId"
    job_responses = paths["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "422" not in job_responses and job_responses["400"]["content"]
    assert {
        "/v1/compress",
        "/v1/decompress",
        "/v1/encode",
        "/v1/decode",
        "/v1/generate",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/audio",
    } <= set(paths)
    assert served.client.get("/healthz").headers["x-request-id"]
    for path in ("/healthz", "/readyz", "/"):  # probes that use HEAD
        head = served.client.head(path)
        assert head.status_code == 200 and head.content == b"", path


# --- the codec -------------------------------------------------------------------------------


def test_compress_then_decompress(served):
    original, rate = sf.read(SPEECH, dtype="float32")
    with open(SPEECH, "rb") as f:
        r = served.client.post(
            "/v1/compress", files={"audio": ("s.flac", f)}, data={"bitrate": "6"}
        )
    assert r.status_code == 200, r.text
    assert r.content[:4] == b"ATOK" and len(r.content) < SPEECH.stat().st_size / 4
    for how in ("body", "multipart"):
        if how == "body":
            d = served.client.post("/v1/decompress?format=flac", content=r.content)
        else:
            d = served.client.post("/v1/decompress", files={"file": ("s.atok", r.content)})
        assert d.status_code == 200, d.text
        audio, out_rate = sf.read(io.BytesIO(d.content), dtype="float32")
        assert out_rate == rate and audio.shape == original.shape


def test_encode_then_decode(served):
    with open(SPEECH, "rb") as f:
        data = f.read()
    for fmt in ("npz", "safetensors"):
        r = served.client.post(
            "/v1/encode", files={"audio": ("s.flac", data)}, data={"bitrate": "1.5", "format": fmt}
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-codebooks"] == "2"
        d = served.client.post("/v1/decode", content=r.content)
        assert d.status_code == 200, d.text
        audio, rate = sf.read(io.BytesIO(d.content))
        assert rate == 24_000 and abs(len(audio) - sf.info(SPEECH).frames) < 24_000 * 0.1


def test_long_uploads_are_coded_as_the_cli_codes_them(served, tmp_path):
    import dataclasses

    import audiotok
    from audiotok.codec.tokens import Tokens
    from audiotok.compression.files import STREAM_SECONDS

    speech, rate = sf.read(SPEECH, dtype="float32")
    long = tmp_path / "long talk.flac"  # just over STREAM_SECONDS: streamed, in bounded memory
    repeats = int(STREAM_SECONDS * rate) // len(speech) + 1
    sf.write(long, np.tile(speech, repeats), rate)
    r = served.client.post("/v1/compress", files={"audio": (long.name, long.read_bytes())})
    assert r.status_code == 200, r.text
    assert "long talk.atok" in unquote(r.headers["content-disposition"])
    audiotok.compress_file(long, tmp_path / "cli.atok", audiotok.load_codec())
    assert r.content == (tmp_path / "cli.atok").read_bytes()
    d = served.client.post("/v1/decompress?format=ogg", content=r.content)
    assert d.status_code == 200 and d.headers["x-sample-rate"] == str(rate)
    assert sf.info(io.BytesIO(d.content)).frames == repeats * len(speech)
    # Tokens of two items make two signals, not one audio file: refused, not half decoded.
    tokens = served.client.post("/v1/encode", files={"audio": ("s.flac", SPEECH.read_bytes())})
    one = Tokens.load(_saved(tmp_path / "one.npz", tokens.content), framework="np")
    two = dataclasses.replace(one, codes=np.concatenate([one.codes, one.codes]))
    two.save(tmp_path / "two.npz")
    answer = served.client.post("/v1/decode", content=(tmp_path / "two.npz").read_bytes())
    assert error_of(answer) == (400, "bad_parameters") and "2 items" in answer.text


def _saved(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_errors_are_json_with_the_right_status(served):
    c = served.client
    speech = SPEECH.read_bytes()
    assert error_of(c.post("/v1/compress", files={"audio": ("x.wav", b"not audio at all")})) == (
        415,
        "unreadable_audio",
    )
    assert error_of(
        c.post("/v1/compress", files={"audio": ("s.flac", speech)}, data={"model": "nope"})
    ) == (422, "unknown_model")
    assert error_of(c.post("/v1/compress", data={"bitrate": "6"})) == (400, "bad_parameters")
    assert error_of(
        c.post("/v1/compress", files={"audio": ("s.flac", speech)}, data={"bitrate": "abc"})
    ) == (400, "bad_parameters")
    assert error_of(c.post("/v1/decompress", content=b"ATOK garbage")) == (400, "bad_file")
    for bitrate in ("7", "0", "-3", "nan"):  # a bitrate the model has not: the request's fault
        form = {"bitrate": bitrate}
        answer = c.post("/v1/compress", files={"audio": ("s.flac", speech)}, data=form)
        assert error_of(answer) == (400, "bad_parameters"), bitrate
    answer = c.post("/v1/compress", files={"audio": ("s.flac", speech)}, data={"format": "ecdc"})
    assert error_of(answer) == (400, "bad_parameters")
    surround = io.BytesIO()  # 3 channels into the mono codec: refused unless downmixed
    sf.write(surround, np.zeros((2400, 3), np.float32), 24_000, format="WAV")
    upload = {"audio": ("5.1.wav", surround.getvalue())}
    assert error_of(c.post("/v1/compress", files=upload)) == (415, "unreadable_audio")
    assert c.post("/v1/compress", files=upload, data={"downmix": "true"}).status_code == 200
    for route in ("/v1/decode", "/v1/decompress"):  # the server's folders stay its own
        answer = c.post(route, content=b"PK\x03\x04 not a tokens file at all")
        assert error_of(answer)[0] == 400 and str(served.state) not in answer.text, answer.text
        assert "upload" in answer.text, answer.text
    json_type = {"content-type": "application/json"}
    answer = c.post("/v1/generate", content=b'{"prompt": "x",}', headers=json_type)
    assert error_of(answer) == (400, "bad_parameters") and "not valid JSON" in answer.text
    answer = c.post("/v1/generate", content=b'{"prompt": "x"}')  # no content type
    assert error_of(answer) == (400, "bad_parameters") and "JSON object" in answer.text
    answer = c.post("/v1/generate", json={"prompt": "x", "duration": 0.001})
    assert error_of(answer) == (400, "bad_parameters") and "one frame" in answer.text
    assert error_of(c.post("/v1/decompress", content=os.urandom(3 * 1024 * 1024))) == (
        413,
        "too_large",
    )
    assert error_of(c.get("/v1/jobs/nope")) == (404, "not_found")
    assert error_of(c.post("/v1/generate", json={"prompt": "x", "duration": -1})) == (
        400,
        "bad_parameters",
    )
    assert error_of(c.post("/v1/generate", json={"prompt": "x", "model": "big"})) == (
        422,
        "unknown_model",
    )
    assert error_of(c.post("/v1/generate", json={"prompt": "x", "duration": 1e4})) == (
        400,
        "bad_parameters",
    )


def test_api_key(served):
    with httpx.Client(base_url=served.url, timeout=TIMEOUT) as client:  # no key of its own
        assert error_of(client.get("/v1/jobs/x")) == (401, "unauthorized")
        bad = {"Authorization": "Bearer wrong"}
        assert error_of(client.get("/v1/jobs/x", headers=bad)) == (401, "unauthorized")
        assert error_of(client.post("/v1/generate", json={"prompt": "x"})) == (401, "unauthorized")
        good = {"Authorization": f"Bearer {KEY}"}
        assert error_of(client.get("/v1/jobs/x", headers=good)) == (404, "not_found")
        assert error_of(client.get("/v1/jobs/x", headers={"X-API-Key": KEY})) == (404, "not_found")
        assert client.get("/healthz").status_code == 200  # probes need no key


def test_generation_without_a_generator_is_an_unknown_model(tmp_path):
    """No generator loaded: generation is an unknown model, not a crash (the app in process:
    a server of its own would only add its start)."""
    from fastapi.testclient import TestClient

    from audiotok.serve.app import create_app
    from audiotok.serve.models import ServedModels
    from audiotok.serve.service import ServeSettings

    settings = ServeSettings(state=tmp_path / "state", api_key=KEY)
    with TestClient(create_app(settings, ServedModels(codecs={}, generators={}))) as client:
        r = client.post("/v1/generate", json={"prompt": "x"}, headers={"X-API-Key": KEY})
        assert error_of(r) == (422, "unknown_model")


# --- generation ------------------------------------------------------------------------------


def test_generate_job_lifecycle(served):
    r = served.client.post(
        "/v1/generate", json={"prompt": "lo-fi beat", "duration": 0.5, "seed": 1, "format": "flac"}
    )
    assert r.status_code == 202, r.text
    job = served.wait_for(r.json()["id"])
    assert job["progress"] == 1 and job["timings"]["queue_wait"] >= 0
    audio = served.client.get(job["result_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/flac"
    wav, rate = sf.read(io.BytesIO(audio.content))
    assert rate == 32_000 and len(wav) == 16_000 and np.abs(wav).max() > 0
    head = served.client.head(job["result_url"])
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(audio.content)


def test_concurrent_requests_are_batched(served):
    before = served.metric("audiotok_batch_size_count")
    prompts = [f"prompt {i}" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(
                lambda p: served.client.post(
                    "/v1/generate", json={"prompt": p, "duration": 0.4, "cache": False}
                ),
                prompts,
            )
        )
    jobs = [served.wait_for(r.json()["id"]) for r in responses]
    batches = served.metric("audiotok_batch_size_count") - before
    assert batches < len(prompts), "4 concurrent requests ran as fewer LM passes than requests"
    assert max(j["batch_size"] for j in jobs) > 1


def test_identical_requests_generate_once_then_hit_the_cache(served):
    body = {"prompt": "same", "duration": 0.4, "seed": 3}
    before = served.metric("audiotok_batch_size_count")
    with ThreadPoolExecutor(3) as pool:
        responses = list(
            pool.map(lambda _: served.client.post("/v1/generate", json=body), range(3))
        )
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1 and sum(r.json()["jobs"][0]["joined"] for r in responses) == 2
    # One subscription each: a DELETE ?subscription= drops that request's interest only.
    assert len({r.json()["jobs"][0]["subscription"] for r in responses}) == 3
    served.wait_for(ids.pop())
    assert served.metric("audiotok_batch_size_count") - before == 1
    assert served.metric("audiotok_dedup_joins_total") >= 2
    again = served.client.post("/v1/generate", json=body).json()["jobs"][0]
    assert again["status"] == "done" and again["cache_hit"]
    assert served.metric("audiotok_cache_hits_total") >= 1
    audio = served.client.get(f"/v1/jobs/{again['id']}/audio")
    assert audio.status_code == 200
    # A fresh run of the same request (no seed: other audio) has a file of its own: it
    # replaced the audio of the jobs done before it, and of their cache hits.
    fresh = {"prompt": "same", "duration": 0.4, "cache": False}
    first = served.client.post("/v1/generate", json=fresh).json()["id"]
    served.wait_for(first)
    first_audio = served.client.get(f"/v1/jobs/{first}/audio").content
    second = served.client.post("/v1/generate", json=fresh).json()["id"]
    served.wait_for(second)
    assert served.client.get(f"/v1/jobs/{first}/audio").content == first_audio
    assert served.client.get(f"/v1/jobs/{second}/audio").content != first_audio, "its own"
    assert served.client.get(f"/v1/jobs/{again['id']}/audio").content == audio.content


def test_rollout_shares():
    """Requests for a name go to its versions by their shares; other names are untouched."""
    import random

    from audiotok.serve.models import Generator, ServedModels, UnknownModel, parse_rollout

    generators = {n: Generator(n, None, n) for n in ("music", "music-v2", "sfx")}
    models = ServedModels({}, generators, rng=random.Random(0))
    models.rollouts["music"] = [parse_rollout("music:music-v2=0.25", generators)[1:]]
    picks = [models.generator("music").name for _ in range(4000)]
    assert abs(picks.count("music-v2") / len(picks) - 0.25) < 0.03
    assert {models.generator("sfx").name for _ in range(50)} == {"sfx"}
    assert models.generator("music-v2").name == "music-v2"  # a version named directly
    for bad in ("music:nope=0.1", "music:music-v2=1.5", "music-v2"):
        with pytest.raises(UnknownModel, match="--rollout"):
            parse_rollout(bad, generators)


def test_a_front_end_knows_generators_run_elsewhere_from_the_catalogue():
    """A front end (generators in other processes) answers 503 for a generator that has not
    published itself yet, then queues for it under the weights the worker published; a job's
    worker runs the job's own version, never drawing the rollout again."""
    from audiotok.serve.models import GeneratorStarting, ServedModels, UnknownModel

    front = ServedModels({}, {}, elsewhere=("music",))
    with pytest.raises(GeneratorStarting, match="starting"):
        front.generator(None)
    with pytest.raises(GeneratorStarting):
        front.generator("music")
    with pytest.raises(UnknownModel):
        front.generator("sfx")
    published = {"weights": "w", "sample_rate": 32000, "max_duration": 30.0, "frame_rate": 50.0}
    front.catalogued({"music": published})
    music = front.generator("music")
    assert (music.weights, music.sample_rate, music.max_duration) == ("w", 32000, 30.0)
    assert music.frame_rate == 50.0 and front.catalogue() == {"music": published}
    front.rollouts["music"] = [("music-v2", 1.0)]
    front.catalogued({"music-v2": {"weights": "w2", "sample_rate": 32000, "max_duration": 30}})
    assert front.generator("music").name == "music-v2"
    assert front.version("music").name == "music"


def test_rollout_and_tracing_over_http(served):
    """With a full rollout the new version runs and is recorded; spans go to stdout, one line
    each as it ends: the request's, the job's batch, and the job, the batch's child."""
    body = {"prompt": "rolled out", "model": "music", "duration": 0.3}
    r = served.client.post("/v1/generate", json=body)
    job = served.wait_for(r.json()["id"])
    assert job["model"] == "music-v2" and job["request"]["model"] == "music-v2"
    request_id = r.headers["x-request-id"]
    deadline = time.monotonic() + TIMEOUT
    while True:  # the batch's span ends after its jobs are delivered
        lines = served.log.read_text().splitlines()
        spans = [json.loads(line) for line in lines if line.startswith('{"name"')]
        by_id = {s["context"]["span_id"]: s for s in spans}
        https = [s for s in spans if s["attributes"].get("request_id") == request_id]
        jobs = [s for s in spans if s["attributes"].get("job") == job["id"]]
        if https and jobs and jobs[0]["parent_id"] in by_id:
            break
        assert time.monotonic() < deadline, "the spans of the request and its job were not logged"
        time.sleep(0.05)
    (http,), (job_span,) = https, jobs
    assert http["name"] == "http POST /v1/generate"
    batch = by_id[job_span["parent_id"]]  # the job is the batch's child
    assert job_span["name"] == "job" and batch["name"] == "generate batch"
    assert job_span["attributes"]["model"] == batch["attributes"]["model"] == "music-v2"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("port in use", "can't listen on 127.0.0.1:{port}: Address already in use"),
        ("empty key", "or unset it to serve without one"),
        ("non-ASCII key", "the API key must be printable ASCII and not empty"),
        ("rollout of nothing", "--rollout 'tiny:tiny-v2=0.1': no generator 'tiny' is loaded"),
        ("state not a database", "jobs.sqlite: file is not a database"),
    ],
)
def test_bad_start_up_is_one_line(tmp_path, case, message):
    """Each was a traceback, a bare uvicorn errno (exit 3), or a service without the key or
    the rollout it was told to have."""
    from audiotok.cli.main import cli

    state, env = tmp_path / "state", {"AUDIOTOK_API_KEY": None}
    args = ["serve", "--port", "0", "--state", str(state)]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if case == "port in use":
            args[2] = str(port)
        elif case == "empty key":
            env["AUDIOTOK_API_KEY"] = ""
        elif case == "non-ASCII key":
            args += ["--api-key", "clé"]
        elif case == "rollout of nothing":
            args += ["--rollout", "tiny:tiny-v2=0.1"]
        else:
            state.mkdir()
            (state / "jobs.sqlite").write_bytes(b"not sqlite" * 100)
        result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].endswith(message.format(port=port)), result.output
    assert "Traceback" not in result.output


def test_a_second_service_on_the_same_state_is_one_line(served, monkeypatch):
    """Refused in one line, here in process (a process of its own is seconds of start-up)."""
    import uvicorn

    from audiotok.cli.main import cli

    def serving(*args, **kwargs):  # a second service started: fail, rather than serve forever
        raise AssertionError("a second service started on the running one's state folder")

    monkeypatch.setattr(uvicorn.Server, "run", serving)
    args = ["serve", "--port", "0", "--state", str(served.state)]  # the running one's folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = CliRunner().invoke(cli, args, env={"AUDIOTOK_API_KEY": None})
        code, output = result.exit_code, result.output
        del result  # its exc_info held the refused service, and so its lock file, alive
        gc.collect()
    assert not [str(w.message) for w in caught if w.category is ResourceWarning]
    assert code == 1, output
    last = output.strip().splitlines()[-1]
    assert last.endswith("another service is using this state folder"), output
    assert "Traceback" not in output
