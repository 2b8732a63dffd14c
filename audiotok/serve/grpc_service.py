"""``audiotok serve --grpc-port``: the HTTP routes' operations over gRPC, in the same process.

The servicer holds the HTTP app's :class:`Service`, so both protocols share its models, its
queue and worker (a job submitted over gRPC is ``GET /v1/jobs/{id}`` over HTTP), its metrics
and its JSON request logs. Each RPC of ``audiotok.v1.Audiotok`` (``audiotok.proto``) runs the
code of its HTTP route:

============  ===========================  =============================================
RPC           HTTP route                   shared code
============  ===========================  =============================================
Compress      ``POST /v1/compress``        ``codec_routes.compress_bytes``
Decompress    ``POST /v1/decompress``      ``codec_routes.decompress_bytes``
Encode        ``POST /v1/encode``          ``codec_routes.encode_bytes``
Decode        ``POST /v1/decode``          ``codec_routes.decode_bytes``
Generate      ``POST /v1/generate`` and    ``job_routes.submit``, then
(stream)      ``GET /v1/jobs/{id}/audio``  ``job_routes.open_result``
GetJob        ``GET /v1/jobs/{id}``        ``job_routes.find_job``, ``job_view``
CancelJob     ``DELETE /v1/jobs/{id}``     ``job_routes.cancel``
============  ===========================  =============================================

``Generate`` streams ``accepted`` (the job's id, ``cache_hit``, ``joined``), a ``progress``
at every change the worker records, and once the job is done its file in 256 KiB ``chunk``\\ s
and ``done``. Errors are the HTTP ones as gRPC codes (:data:`GRPC_CODES`) with the one-line
message, and the HTTP error code in the trailing metadata ``error-code``. Metrics label each
call ``route="grpc:/audiotok.v1.Audiotok/<RPC>"`` with the gRPC code as its status.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, get_args

from pydantic import ValidationError

from ..errors import AudiotokError

try:
    import grpc
except ImportError:  # the HTTP service runs without it; only --grpc-port imports this module
    raise AudiotokError('--grpc-port needs grpcio: pip install "audiotok[serve]"') from None
from .codec_routes import (
    CompressedFormat,
    OutputFormat,
    TokensFormat,
    compress_bytes,
    decode_bytes,
    decompress_bytes,
    encode_bytes,
)
from .errors import ApiError, api_error_of
from .grpc_gen import audiotok_pb2 as pb
from .grpc_gen import audiotok_pb2_grpc as pb_grpc
from .job_records import FINAL, Job
from .job_routes import cancel, find_job, job_view, open_result, submit
from .observability import log_event
from .requests import GenerateRequest
from .service import Service, ServiceError
from .tracing import span
from .uploads import check_size

SERVICE_NAME = "audiotok.v1.Audiotok"
CHUNK_BYTES = 256 * 1024
# A stream rechecks that its client is still there at least this often (seconds).
POLL_SECONDS = 0.5
GENERATE_FIELDS = (
    "prompt", "model", "duration", "seed", "use_sampling", "top_k", "top_p", "temperature",
    "cfg_coef", "format", "cache",
)  # fmt: skip

GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,  # the job's audio is not there (yet)
    410: grpc.StatusCode.NOT_FOUND,  # the job's audio expired
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.NOT_FOUND,  # a model this service did not load
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class AudiotokServicer(pb_grpc.AudiotokServicer):
    """The RPCs, each in :meth:`_call` (key, errors, metrics, log line, span)."""

    def __init__(self, service: Service, max_streams: int = 24) -> None:
        self.service = service
        # An open Generate stream holds a server thread for its job's whole wait and run:
        # past this many, the rest are refused, so that threads stay for GetJob and
        # CancelJob (32 streams used to hold every thread: a CancelJob waited for a job).
        self.max_streams = max_streams
        self._streams = threading.BoundedSemaphore(max_streams)

    def Compress(
        self, request: pb.CompressRequest, context: grpc.ServicerContext
    ) -> pb.CompressReply:
        with self._call("Compress", context):
            fmt = _choice("format", request.format or "atok", CompressedFormat)
            codec = self.service.models.codec(request.model or None)
            audio = check_size(self.service, request.audio)
            data, seconds = compress_bytes(
                self.service, codec, audio, _bitrate(request), fmt, request.downmix
            )
            return pb.CompressReply(data=data, audio_seconds=seconds, model=codec.model_id)

    def Decompress(
        self, request: pb.DecompressRequest, context: grpc.ServicerContext
    ) -> pb.AudioReply:
        with self._call("Decompress", context):
            fmt = _choice("format", request.format or "wav", OutputFormat)
            data = self._upload(request.data)
            audio, (rate, loss) = decompress_bytes(self.service, data, fmt, request.recover)
            # As HTTP's X-Lost-Seconds and X-Problems (0 and none unless asked to recover).
            return pb.AudioReply(
                audio=audio,
                sample_rate=rate,
                format=fmt,
                lost_seconds=loss.seconds,
                problems=loss.problems,
            )

    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeReply:
        with self._call("Encode", context):
            fmt = _choice("format", request.format or "npz", TokensFormat)
            codec = self.service.models.codec(request.model or None)
            data, tokens = encode_bytes(
                self.service, codec, check_size(self.service, request.audio), _bitrate(request), fmt
            )
            _, codebooks, frames = tokens.codes.shape
            return pb.EncodeReply(tokens=data, codebooks=codebooks, frames=frames)

    def Decode(self, request: pb.DecodeRequest, context: grpc.ServicerContext) -> pb.AudioReply:
        with self._call("Decode", context):
            fmt = _choice("format", request.format or "wav", OutputFormat)
            audio, rate = decode_bytes(self.service, self._upload(request.tokens), fmt)
            return pb.AudioReply(audio=audio, sample_rate=rate, format=fmt)

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateEvent]:
        with self._call("Generate", context) as request_id:
            if not self._streams.acquire(blocking=False):
                raise ApiError(
                    429,
                    "too_many_streams",
                    f"{self.max_streams} Generate streams are open, the most this service "
                    "keeps: retry, or submit over HTTP and poll GetJob",
                    headers={"Retry-After": "5"},
                )
            try:
                yield from self._generate(request, context, request_id)
            finally:
                self._streams.release()

    def GetJob(self, request: pb.JobRequest, context: grpc.ServicerContext) -> pb.Job:
        with self._call("GetJob", context):
            return job_message(find_job(self.service, request.id))

    def CancelJob(self, request: pb.JobRequest, context: grpc.ServicerContext) -> pb.Job:
        with self._call("CancelJob", context):
            subscription = request.subscription if request.HasField("subscription") else None
            return job_message(cancel(self.service, request.id, subscription))

    # --- generation ----------------------------------------------------------------------

    def _generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext, request_id: str
    ) -> Iterator[pb.GenerateEvent]:
        """Submits the job as HTTP does, streams its changes, then its file."""
        fields = {f: getattr(request, f) for f in GENERATE_FIELDS if request.HasField(f)}
        submitted = submit(self.service, GenerateRequest(**fields), request_id)[0]
        job = submitted.job
        yield pb.GenerateEvent(
            accepted=pb.Accepted(
                id=job.id,
                cache_hit=submitted.cache_hit,
                joined=submitted.joined,
                model=job.model,
                subscription=submitted.subscription or "",
            )
        )
        for job in self._changes(submitted.job.id, context):  # job: its latest state
            progress = pb.Progress(status=job.status, progress=round(job.progress, 4))
            yield pb.GenerateEvent(progress=progress)
        if not context.is_active():
            return  # the client left; the job is in the queue, for GetJob or HTTP
        offset = 0
        with open_result(self.service, job) as file:
            while chunk := file.read(CHUNK_BYTES):
                yield pb.GenerateEvent(chunk=pb.AudioChunk(data=chunk, offset=offset))
                offset += len(chunk)
        yield pb.GenerateEvent(done=pb.Done(id=job.id, format=job.request["format"], size=offset))

    def _changes(self, job_id: str, context: grpc.ServicerContext) -> Iterator[Job]:
        """The job at each change of its status or progress, until it is final or the client
        leaves. Waits on the queue's condition, which every write notifies, so progress goes
        out as soon as the worker records it; leaving wakes the wait too."""
        store = self.service.store

        def wake() -> None:
            with store.changed:
                store.changed.notify_all()

        context.add_callback(wake)
        seen: tuple[str, float] | None = None
        while context.is_active():
            with store.changed:
                job = find_job(self.service, job_id)
                if (job.status, job.progress) == seen:
                    store.changed.wait(POLL_SECONDS)
                    job = find_job(self.service, job_id)
            if (job.status, job.progress) != seen:
                seen = (job.status, job.progress)
                yield job
            if job.status in FINAL:
                return

    # --- every call ----------------------------------------------------------------------

    @contextmanager
    def _call(self, method: str, context: grpc.ServicerContext) -> Iterator[str]:
        """Runs one RPC's body: checks the key, turns errors into gRPC codes, and records the
        call as HTTP's middleware records a request. Yields the call's request id."""
        route = f"grpc:/{SERVICE_NAME}/{method}"
        metadata = {key: value for key, value in context.invocation_metadata()}
        request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex)
        context.send_initial_metadata((("x-request-id", request_id),))
        start = time.perf_counter()
        status, error = grpc.StatusCode.OK, None
        with span(f"grpc {method}", request_id=request_id) as current:
            try:
                self._authorize(metadata)
                yield request_id
            except GeneratorExit:  # a stream's client left
                status = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                error = api_error(exc)
                if error is None:
                    self.service.logger.exception("internal error")
                    error = ApiError(500, "internal", f"{type(exc).__name__}: {exc}")
                status = GRPC_CODES.get(error.status, grpc.StatusCode.INTERNAL)
            finally:
                if status == grpc.StatusCode.OK and not context.is_active():
                    status = grpc.StatusCode.CANCELLED  # a stream that saw its client leave
                if current is not None:
                    current.set_attribute("rpc.grpc.status_code", status.value[0])
                elapsed = time.perf_counter() - start
                metrics = self.service.metrics
                metrics.request_seconds.labels(route, status.name).observe(elapsed)
                if error is not None:
                    metrics.errors.labels(f"grpc_{status.name.lower()}").inc()
                log_event(
                    self.service.logger,
                    "request",
                    request_id=request_id,
                    method="gRPC",
                    route=route,
                    status=status.name,
                    latency=round(elapsed, 5),
                )
        if error is not None:
            context.set_trailing_metadata((("error-code", error.code),))
            context.abort(status, (error.message.splitlines() or [error.code])[0])

    def _authorize(self, metadata: dict[str, Any]) -> None:
        """The HTTP rule: ``authorization: Bearer KEY`` (or ``x-api-key: KEY``) metadata."""
        key = self.service.settings.api_key
        if not key:
            return
        auth = str(metadata.get("authorization", ""))
        given = auth[7:] if auth.lower().startswith("bearer ") else metadata.get("x-api-key", "")
        if not hmac.compare_digest(str(given).encode(), key.encode()):
            what = "a wrong" if given else "no"
            raise ApiError(401, "unauthorized", f"{what} API key (authorization: Bearer KEY)")

    def _upload(self, data: bytes) -> bytes:
        if not data:
            raise ApiError(400, "bad_parameters", "no data")
        return check_size(self.service, data)


def api_error(exc: Exception) -> ApiError | None:
    """The HTTP error answer an exception makes (None: an internal error)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AudiotokError):
        return api_error_of(exc)
    if isinstance(exc, ValidationError):  # worded as HTTP's validation errors
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = first.get("msg", "invalid")
        return ApiError(400, "bad_parameters", f"{where}: {message}" if where else message)
    return None


def job_message(job: Job) -> pb.Job:
    """What ``GetJob`` says of a job: ``GET /v1/jobs/{id}``'s view as a message."""
    view = job_view(job)
    error = view.get("error")
    return pb.Job(
        id=job.id,
        status=job.status,
        model=job.model,
        progress=view["progress"],
        cache_hit=job.cache_hit,
        attempts=job.attempts,
        batch_size=job.batch_size,
        request_json=json.dumps(view["request"], sort_keys=True),
        timings=pb.Timings(**{k: v for k, v in view["timings"].items() if v is not None}),
        error=pb.JobError(**error) if error else None,
        result_url=view.get("result_url", ""),
    )


def _choice(name: str, value: str, allowed: Any) -> str:
    """``value`` if it is one of the ``Literal`` ``allowed`` (as HTTP checks its forms)."""
    options = get_args(allowed)
    if value not in options:
        raise ApiError(400, "bad_parameters", f"{name}: expected one of {', '.join(options)}")
    return value


def _bitrate(request: pb.CompressRequest | pb.EncodeRequest) -> float | None:
    return request.bitrate if request.HasField("bitrate") else None


def start_grpc(service: Service, host: str, port: int, workers: int = 32) -> grpc.Server:
    """Serves ``service`` over gRPC on ``host:port`` (0: a free port, logged) until
    :func:`stop_grpc`. Each open ``Generate`` stream holds one of the ``workers`` threads;
    ``workers - 8`` streams at most, the rest are kept for the other calls."""
    # An upload may be as large as HTTP's, plus the message around it.
    limit = service.settings.max_upload_bytes + 1024 * 1024
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        # gRPC shares ports by default: a second service on the port must fail, as for HTTP.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audiotok-grpc"),
        options=options,
    )
    servicer = AudiotokServicer(service, max_streams=max(1, workers - 8))
    pb_grpc.add_AudiotokServicer_to_server(servicer, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServiceError(f"gRPC can't listen on {address}: {exc}") from None
    if not bound:
        raise ServiceError(f"gRPC can't listen on {address}")
    server.start()
    log_event(service.logger, "grpc started", host=host, port=bound)
    return server


def stop_grpc(server: grpc.Server, grace: float = 2.0) -> None:
    """Stops taking calls, lets those in flight finish for ``grace`` seconds, then cancels
    them (open ``Generate`` streams end; their jobs stay in the queue)."""
    server.stop(grace).wait()
