"""The FastAPI application: routes, API key, upload cap, request logs and metrics.

    >>> app = create_app(ServeSettings(state=Path("state")), models)     # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)

``/healthz`` says the process answers, ``/readyz`` that its models are loaded and its queue
open, ``/metrics`` is Prometheus' text format, ``/docs`` the OpenAPI page.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from . import codec_routes, errors, job_routes
from .models import ServedModels
from .observability import log_event
from .service import ServeSettings, Service

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc")


def create_app(settings: ServeSettings, models: ServedModels) -> FastAPI:
    """The service's application; the service starts and stops with the app's lifespan."""
    service = Service(settings, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="audiotok",
        version=__version__,
        lifespan=lifespan,
        description="Neural audio compression and generation (docs/SERVING.md).",
    )
    app.state.service = service
    errors.install(app)
    app.include_router(codec_routes.router)
    app.include_router(job_routes.router)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        start = time.perf_counter()
        response = _refusal(request, settings)
        if response is None:
            response = await call_next(request)
        elapsed = time.perf_counter() - start
        route = getattr(request.scope.get("route"), "path", "unmatched")
        service.metrics.request_seconds.labels(route, str(response.status_code)).observe(elapsed)
        if response.status_code >= 400:
            service.metrics.errors.labels(f"http_{response.status_code}").inc()
        response.headers["X-Request-ID"] = request.state.request_id
        log_event(
            service.logger,
            "request",
            request_id=request.state.request_id,
            method=request.method,
            route=route,
            status=response.status_code,
            latency=round(elapsed, 5),
        )
        return response

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> Response:
        worker_ok = service.worker is None or service.worker.is_alive()
        ready = service.store is not None and worker_ok
        body = {
            "status": "ready" if ready else "not ready",
            "codecs": sorted(models.codecs),
            "generators": sorted(models.generators),
        }
        if not ready:
            return errors.error_response(503, "not_ready", "the queue or the worker is not running")
        return JSONResponse(body)

    @app.get("/metrics", tags=["operations"])
    def metrics() -> Response:
        service.update_queue_gauges()
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _refusal(request: Request, settings: ServeSettings) -> Response | None:
    """The answer to a request refused before routing: a missing key, an upload too large."""
    path = request.url.path
    if settings.api_key and not path.startswith(OPEN_PATHS):
        auth = request.headers.get("authorization", "")
        given = (
            auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        )
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            what = "a wrong" if given else "no"
            return errors.error_response(
                401,
                "unauthorized",
                f"{what} API key (Authorization: Bearer KEY)",
                headers={"WWW-Authenticate": "Bearer"},
            )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
        return errors.error_response(
            413, "too_large", f"uploads are limited to {settings.max_upload_bytes} bytes"
        )
    return None
