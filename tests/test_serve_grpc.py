"""``audiotok serve --grpc-port`` over real gRPC: a server process started by the tests on
loopback ports (HTTP and gRPC, one process and queue), serving the packaged default codec and
a tiny random MusicGen written by the tests.

Every wait is bounded (``TIMEOUT``); the servers are stopped at the end of their test.
"""

from __future__ import annotations

import collections
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from test_serve import KEY, SPEECH, TIMEOUT, Server
from test_serve import generator_dir as generator_dir  # a fixture, shared with test_serve

from audiotok.compression.container.header import Header

grpc = pytest.importorskip("grpc")
pb = pytest.importorskip("audiotok.serve.grpc_gen.audiotok_pb2")
pb_grpc = pytest.importorskip("audiotok.serve.grpc_gen.audiotok_pb2_grpc")


_FIELDS = ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")


class _Details(collections.namedtuple("_Details", _FIELDS), grpc.ClientCallDetails):
    """A call's details, to send changed (grpc's own class is private)."""


class _WithKey(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends ``authorization: Bearer KEY`` with every call."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _details(self, details: Any) -> _Details:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.key}")]
        return _Details(*(getattr(details, f) for f in _FIELDS))._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


class GrpcServer:
    """A :class:`Server` (HTTP, for the checks) also serving gRPC, with a client stub, which
    (and the HTTP client) sends ``key`` when the server takes one."""

    def __init__(self, state: Path, *args: str, key: str | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        keyed = ("--api-key", key) if key else ()
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self.http = Server(state, "--grpc-port", str(port), *keyed, *args, headers=headers)
        # Decoded audio can be larger than gRPC's default 4 MiB a message.
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
        grpc.channel_ready_future(self.channel).result(timeout=TIMEOUT)
        channel = grpc.intercept_channel(self.channel, _WithKey(key)) if key else self.channel
        self.stub = pb_grpc.AudiotokStub(channel)

    def stop(self) -> None:
        self.channel.close()
        self.http.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, generator_dir) -> Iterator[GrpcServer]:
    """The tests' server, which takes an API key (its clients send it)."""
    server = GrpcServer(
        tmp_path_factory.mktemp("grpc") / "state",
        "--generator",
        f"tiny={generator_dir}",
        "--max-upload-mb",
        "1",
        key=KEY,
    )
    yield server
    server.stop()


def rpc_error(call: Any) -> tuple[Any, str]:
    """The status code and HTTP error code of a call that fails (a stream is read through)."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__next__"):  # a stream fails as it is read
            list(result)
    error = info.value
    assert error.details() and "\n" not in error.details(), error.details()
    return error.code(), dict(error.trailing_metadata() or ())["error-code"]


def test_compress_then_decompress(served):
    original, rate = sf.read(SPEECH, dtype="float32")
    reply = served.stub.Compress(pb.CompressRequest(audio=SPEECH.read_bytes(), bitrate=6))
    assert reply.data[:4] == b"ATOK" and reply.model == "audiotok_24khz"
    assert abs(reply.audio_seconds - len(original) / rate) < 1e-3
    audio = served.stub.Decompress(pb.DecompressRequest(data=reply.data, format="flac"))
    assert audio.sample_rate == rate and audio.format == "flac"
    decoded, out_rate = sf.read(io.BytesIO(audio.audio), dtype="float32")
    assert out_rate == rate and decoded.shape == original.shape
    # Cut off (its index and last packets gone): refused, naming the field that decodes it.
    cut = reply.data[: len(reply.data) * 2 // 3]
    with pytest.raises(grpc.RpcError) as refused:
        served.stub.Decompress(pb.DecompressRequest(data=cut))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().endswith("; recover=true decodes what is there")
    audio = served.stub.Decompress(pb.DecompressRequest(data=cut, recover=True))
    recovered = sf.read(io.BytesIO(audio.audio), dtype="float32")[0]
    assert len(recovered) == len(original)  # the lost end silent
    # ... and said: the seconds lost are that silent end (to a frame: the last one is cut to
    # the signal's length), and the problems say the stream was truncated.
    header = Header.from_bytes(reply.data)
    silent = (len(recovered) - (np.flatnonzero(recovered)[-1] + 1)) / rate
    assert audio.lost_seconds > 0.1, audio.lost_seconds
    assert abs(audio.lost_seconds - silent) <= 1.5 * header.hop_length / header.sample_rate
    assert [p for p in audio.problems if p.startswith("truncated: ")], audio.problems
    whole = served.stub.Decompress(pb.DecompressRequest(data=reply.data, recover=True))
    assert whole.lost_seconds == 0 and list(whole.problems) == []


def test_encode_then_decode(served):
    frames = sf.info(SPEECH).frames
    for fmt in ("npz", "safetensors"):
        request = pb.EncodeRequest(audio=SPEECH.read_bytes(), bitrate=1.5, format=fmt)
        tokens = served.stub.Encode(request)
        assert tokens.codebooks == 2 and tokens.frames > 0
        audio = served.stub.Decode(pb.DecodeRequest(tokens=tokens.tokens))
        decoded, rate = sf.read(io.BytesIO(audio.audio))
        assert rate == audio.sample_rate == 24_000 and abs(len(decoded) - frames) < 2_400


def test_generate_streams_progress_then_audio(served):
    request = pb.GenerateRequest(prompt="lo-fi beat", duration=5.0, seed=1)
    events = [(e.WhichOneof("event"), e) for e in served.stub.Generate(request, timeout=TIMEOUT)]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "accepted" and kinds[-1] == "done", kinds
    accepted = events[0][1].accepted
    assert not accepted.cache_hit and not accepted.joined and accepted.model == "tiny"
    progress = [e.progress for kind, e in events if kind == "progress"]
    values = [p.progress for p in progress]
    assert values == sorted(values) and progress[-1].status == "done" and values[-1] == 1
    chunks = [e.chunk for kind, e in events if kind == "chunk"]
    assert len(chunks) == 2, "5 s of 16-bit 32 kHz audio: two chunks of at most 256 KiB"
    assert [c.offset for c in chunks] == [0, len(chunks[0].data)]
    data = b"".join(c.data for c in chunks)
    assert events[-1][1].done.size == len(data) and events[-1][1].done.format == "wav"
    wav, rate = sf.read(io.BytesIO(data))
    assert rate == 32_000 and len(wav) == 5 * 32_000

    # The same queue: HTTP sees the job and serves the same file, and counts the call.
    http = served.http.client
    job = http.get(f"/v1/jobs/{accepted.id}").json()
    assert job["status"] == "done" and job["request"]["prompt"] == "lo-fi beat"
    assert http.get(job["result_url"]).content == data
    route = "grpc:/audiotok.v1.Audiotok/Generate"
    calls = f'audiotok_request_seconds_count{{route="{route}",status="OK"}}'
    assert served.http.metric(calls) >= 1
    # The same request again is answered from the cache, over either protocol.
    again = list(served.stub.Generate(request, timeout=TIMEOUT))
    assert again[0].accepted.cache_hit and again[0].accepted.id != accepted.id
    assert b"".join(e.chunk.data for e in again) == data


def test_http_jobs_seen_and_cancelled_over_grpc(served):
    body = {"prompt": "long", "duration": 30, "cache": False}
    job_id = served.http.client.post("/v1/generate", json=body).json()["id"]
    job = served.stub.GetJob(pb.JobRequest(id=job_id))
    assert job.id == job_id and job.status in ("queued", "running") and job.model == "tiny"
    assert json.loads(job.request_json)["duration"] == 30 and job.timings.created > 0
    assert served.stub.CancelJob(pb.JobRequest(id=job_id)).status == "cancelled"
    assert served.http.wait_for(job_id, ("cancelled",))["status"] == "cancelled"


def test_closing_the_stream_leaves_the_job_in_the_queue(served):
    request = pb.GenerateRequest(prompt="left", duration=30, cache=False)
    stream = served.stub.Generate(request, timeout=TIMEOUT)
    job_id = next(stream).accepted.id
    assert next(stream).progress.status in ("queued", "running")
    stream.cancel()
    route = "grpc:/audiotok.v1.Audiotok/Generate"
    calls = f'audiotok_request_seconds_count{{route="{route}",status="CANCELLED"}}'
    deadline = time.monotonic() + TIMEOUT
    while served.http.metric(calls) < 1:  # the server noticed, and left the job
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job = served.stub.GetJob(pb.JobRequest(id=job_id))
    assert job.status in ("queued", "running")
    assert served.stub.CancelJob(pb.JobRequest(id=job_id)).status == "cancelled"


def test_errors_are_status_codes(served):
    stub, speech = served.stub, SPEECH.read_bytes()
    code = grpc.StatusCode
    assert rpc_error(lambda: stub.Compress(pb.CompressRequest(audio=speech, model="nope"))) == (
        code.NOT_FOUND,
        "unknown_model",
    )
    assert rpc_error(lambda: stub.Generate(pb.GenerateRequest(prompt="x", model="big"))) == (
        code.NOT_FOUND,
        "unknown_model",
    )
    assert rpc_error(lambda: stub.Compress(pb.CompressRequest(audio=b"not audio"))) == (
        code.INVALID_ARGUMENT,
        "unreadable_audio",
    )
    assert rpc_error(lambda: stub.Compress(pb.CompressRequest(audio=speech, format="zip"))) == (
        code.INVALID_ARGUMENT,
        "bad_parameters",
    )
    assert rpc_error(lambda: stub.Decompress(pb.DecompressRequest(data=b"ATOK garbage"))) == (
        code.INVALID_ARGUMENT,
        "bad_file",
    )
    too_large = pb.DecompressRequest(data=b"ATOK" + bytes(1024 * 1024))
    assert rpc_error(lambda: stub.Decompress(too_large)) == (
        code.RESOURCE_EXHAUSTED,
        "too_large",
    )
    assert rpc_error(lambda: stub.Generate(pb.GenerateRequest(prompt="x", duration=-1))) == (
        code.INVALID_ARGUMENT,
        "bad_parameters",
    )
    assert rpc_error(lambda: stub.GetJob(pb.JobRequest(id="nope"))) == (
        code.NOT_FOUND,
        "not_found",
    )
    assert rpc_error(lambda: stub.Compress(pb.CompressRequest(audio=speech, bitrate=7))) == (
        code.INVALID_ARGUMENT,
        "bad_parameters",
    )
    surround = io.BytesIO()  # 3 channels: a mono codec can't give them back unless downmixed
    sf.write(surround, np.zeros((2400, 3), np.float32), 24_000, format="WAV")
    refused = pb.CompressRequest(audio=surround.getvalue())
    assert rpc_error(lambda: stub.Compress(refused)) == (code.INVALID_ARGUMENT, "unreadable_audio")
    downmixed = stub.Compress(pb.CompressRequest(audio=surround.getvalue(), downmix=True))
    assert downmixed.data[:4] == b"ATOK"


def test_api_key(served):
    request, stub = pb.JobRequest(id="x"), pb_grpc.AudiotokStub(served.channel)  # no key
    assert rpc_error(lambda: stub.GetJob(request)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthorized",
    )
    wrong = (("authorization", "Bearer wrong"),)
    assert rpc_error(lambda: stub.GetJob(request, metadata=wrong))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert rpc_error(lambda: stub.Generate(pb.GenerateRequest(prompt="x")))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    good = (("authorization", f"Bearer {KEY}"),)
    assert rpc_error(lambda: stub.GetJob(request, metadata=good)) == (
        grpc.StatusCode.NOT_FOUND,
        "not_found",
    )


def test_generate_streams_leave_threads_for_the_other_calls(monkeypatch):
    """Every Generate stream holds a server thread for its job's wait and run: 32 of them
    held all the threads, and a CancelJob waited for a job to end."""
    import contextlib

    from audiotok.serve.errors import ApiError
    from audiotok.serve.grpc_service import AudiotokServicer

    servicer = AudiotokServicer(service=None, max_streams=1)
    monkeypatch.setattr(servicer, "_call", lambda *a: contextlib.nullcontext("rid"))
    monkeypatch.setattr(servicer, "_generate", lambda *a: iter(["event"]))
    first = servicer.Generate(pb.GenerateRequest(prompt="a"), None)
    assert next(first) == "event"  # open: holds the one stream
    with pytest.raises(ApiError) as refused:
        list(servicer.Generate(pb.GenerateRequest(prompt="b"), None))
    assert (refused.value.status, refused.value.code) == (429, "too_many_streams")
    list(first)  # the first ends: its place is free again
    assert list(servicer.Generate(pb.GenerateRequest(prompt="c"), None)) == ["event"]


def test_cancel_job_by_subscription_drops_one_request_once(served):
    request = pb.GenerateRequest(prompt="joined over grpc", duration=30)
    streams, accepted = [], []
    for _ in range(2):  # one after the other: two calls at once may be submitted either way
        streams.append(served.stub.Generate(request, timeout=TIMEOUT))
        accepted.append(next(streams[-1]).accepted)
    first, second = accepted
    assert second.joined and second.id == first.id and first.subscription != second.subscription
    for _ in range(2):  # retried: the other request's interest stays
        job = served.stub.CancelJob(pb.JobRequest(id=first.id, subscription=first.subscription))
        assert job.status in ("queued", "running")
    job = served.stub.CancelJob(pb.JobRequest(id=first.id, subscription=second.subscription))
    assert job.status == "cancelled"
    for stream in streams:
        stream.cancel()
