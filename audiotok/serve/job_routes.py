"""``/v1/generate`` and ``/v1/jobs``: generation as jobs in the persistent queue.

``POST /v1/generate`` answers ``202`` at once with one job per prompt; the client polls
``GET /v1/jobs/{id}`` and fetches ``GET /v1/jobs/{id}/audio`` when it is ``done``. A request
equal to one answered within the cache's TTL is ``done`` at once (``cache_hit``); one equal
to a job in flight joins it (``joined``). ``submit``, ``find_job``, ``open_result`` and
``cancel`` are the routes' work, which gRPC calls too.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from .codec_routes import AUDIO_TYPES
from .errors import ApiError, error_responses
from .job_records import Job, QueueFull, Submitted
from .observability import log_event
from .requests import GenerateRequest, batch_key, cache_key
from .service import Service

router = APIRouter(prefix="/v1", tags=["generation"], responses=error_responses(401))


def get_and_head(router: Any, path: str, **options: Any) -> Any:
    """A decorator: ``GET path`` (documented) and ``HEAD path`` (the same function, left out of
    the OpenAPI schema: one route with both methods gave both operations one operationId,
    which FastAPI warned of and OpenAPI forbids). HEAD serves probes and download sizes."""

    def register(endpoint: Any) -> Any:
        head_class = options.get("response_class", JSONResponse)
        router.add_api_route(
            path, endpoint, methods=["HEAD"], include_in_schema=False, response_class=head_class
        )
        return router.get(path, **options)(endpoint)

    return register


def _service(request: Request) -> Service:
    return request.app.state.service


def job_view(job: Job) -> dict[str, Any]:
    """What ``GET /v1/jobs/{id}`` says of a job."""
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "model": job.model,
        "progress": round(job.progress, 4),
        "cache_hit": job.cache_hit,
        "attempts": job.attempts,
        "batch_size": job.batch_size,
        "worker": job.worker,
        "request": job.request,
        "timings": {
            "created": job.created,
            "started": job.started,
            "finished": job.finished,
            "queue_wait": None if job.started is None else round(job.started - job.created, 4),
            "run": None
            if None in (job.started, job.finished)
            else round(job.finished - job.started, 4),
        },
    }
    if job.status == "done":
        view["result_url"] = f"/v1/jobs/{job.id}/audio"
    if job.error_code:
        view["error"] = {"code": job.error_code, "message": job.error}
    return view


@router.post("/generate", status_code=202, responses=error_responses(400, 422, 429, 503))
def generate(request: Request, body: GenerateRequest) -> dict[str, Any]:
    """Queues one job per prompt (or answers it from the cache); ``202`` with their ids."""
    jobs = [
        {
            **job_view(s.job),
            "joined": s.joined,
            "url": f"/v1/jobs/{s.job.id}",
            # DELETE ...?subscription= cancels this request's interest only, once.
            "subscription": s.subscription,
        }
        for s in submit(_service(request), body, request.state.request_id)
    ]
    return {"id": jobs[0]["id"], "jobs": jobs}


def submit(service: Service, body: GenerateRequest, request_id: str | None) -> list[Submitted]:
    """Queues one job per prompt of ``body``, answers it from the cache or joins an identical
    one in flight; HTTP and gRPC both submit here."""
    settings = service.settings
    generator = service.generator(body.model)
    if body.duration > settings.max_duration:
        raise ApiError(400, "bad_parameters", f"duration: at most {settings.max_duration:g} s")
    rate = generator.frame_rate  # 0 where a catalogue does not say
    if rate and body.duration * rate < 1:  # refused here rather than failed as a job later
        raise ApiError(
            400,
            "bad_parameters",
            f"duration: at least one frame, {1 / rate:g} s",
        )
    submissions, keys = [], []
    for job_request in body.job_requests(generator.name, generator.weights):
        key = cache_key(job_request)
        try:
            submitted = service.store.submit(
                key,
                batch_key(job_request),
                generator.name,
                job_request,
                settings.deadline(body.duration),
                use_cache=body.cache,
                result_exists=service.result_exists,
            )
        except QueueFull as exc:
            # All or nothing: the prompts queued before the cap are withdrawn (a joined job
            # loses this request's subscription only), so a retry duplicates none of them.
            for earlier in submissions:
                if not earlier.cache_hit:
                    service.store.cancel(earlier.job.id, earlier.subscription)
            raise ApiError(
                429, "queue_full", f"{exc}; try again later", headers={"Retry-After": "5"}
            ) from None
        submissions.append(submitted)
        keys.append(key)
    # Counted and logged once all are in: a 429 part way withdrew the ones before it.
    for submitted, key in zip(submissions, keys, strict=True):
        if submitted.cache_hit:
            service.metrics.cache_hits.inc()
        if submitted.joined:
            service.metrics.dedup_joins.inc()
        log_event(
            service.logger,
            "job submitted",
            job=submitted.job.id,
            model=generator.name,
            key=key[:16],
            cache_hit=submitted.cache_hit,
            joined=submitted.joined,
            request_id=request_id,
        )
    return submissions


def find_job(service: Service, job_id: str) -> Job:
    """The job ``job_id`` (404 if there is none)."""
    job = service.store.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


@router.get("/jobs/{job_id}", responses=error_responses(404))
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    """The job's status, progress, timings, and its result URL once done."""
    return job_view(find_job(_service(request), job_id))


@get_and_head(
    router,
    "/jobs/{job_id}/audio",
    response_class=FileResponse,
    responses=error_responses(404, 409, 410, 504),
)
def get_audio(request: Request, job_id: str) -> Response:
    """The generated audio of a ``done`` job, in the format it asked for."""
    service = _service(request)
    job = find_job(service, job_id)
    fmt = job.request["format"]
    media_type, filename = AUDIO_TYPES[fmt], f"{job.id}.{fmt}"
    name = result_name(service, job)
    path = service.results.path(name)
    if path is not None:
        return FileResponse(path, media_type=media_type, filename=filename)
    with _open(service, name) as file:
        return Response(
            file.read(),
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def result_name(service: Service, job: Job) -> str:
    """The result of a ``done`` job; an error (410, 504, 409) for any other job."""
    if job.status == "done" and service.result_exists(job.result):
        return job.result
    if job.status in ("done", "expired"):
        raise ApiError(410, "expired", "the job's audio is no longer kept; generate again")
    if job.error_code == "deadline_exceeded":
        raise ApiError(504, "deadline_exceeded", job.error or "deadline exceeded")
    if job.status == "failed":
        raise ApiError(409, "job_failed", f"{job.error_code}: {job.error}")
    if job.status == "cancelled":  # final: not_ready would say "ask again later"
        raise ApiError(409, "cancelled", "the job was cancelled; its audio was not made")
    raise ApiError(409, "not_ready", f"the job is {job.status}")


def open_result(service: Service, job: Job) -> BinaryIO:
    """The audio of a ``done`` job, to read; the errors of :func:`result_name`."""
    return _open(service, result_name(service, job))


def _open(service: Service, name: str) -> BinaryIO:
    try:
        return service.results.open(name)
    except FileNotFoundError:  # expired between the check and the read
        raise ApiError(410, "expired", "the job's audio is no longer kept") from None


@router.delete("/jobs/{job_id}", responses=error_responses(404))
def cancel_job(request: Request, job_id: str, subscription: str | None = None) -> dict[str, Any]:
    """Cancels the job (when no identical request still waits on it); a running batch stops
    at its next step once none of its jobs is wanted. With the ``subscription`` its
    ``/v1/generate`` answer gave, a retried DELETE drops nobody else's interest."""
    return job_view(cancel(_service(request), job_id, subscription))


def cancel(service: Service, job_id: str, subscription: str | None = None) -> Job:
    """One subscriber fewer on the job ``job_id`` (404 if there is none), or only that of
    ``subscription``, once; it is cancelled when none is left."""
    find_job(service, job_id)
    job = service.store.cancel(job_id, subscription)
    log_event(service.logger, "job cancel", job=job_id, status=job.status if job else None)
    return job
