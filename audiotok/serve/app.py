"""The FastAPI application: routes, API key, upload cap, request logs and metrics.

    >>> app = create_app(ServeSettings(state=Path("state")), models)     # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)

``/healthz`` says the process answers, ``/readyz`` that its models are loaded and its queue
open, ``/metrics`` is Prometheus' text format, ``/docs`` the OpenAPI page, ``/`` a web page
to try the service in a browser (``static/``).
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Match

from .. import __version__
from . import codec_routes, errors, job_routes
from .models import ServedModels
from .observability import log_event
from .service import ServeSettings, Service, ServiceError
from .tracing import span
from .uploads import MULTIPART_ALLOWANCE, BodyCap

# A job's audio asked for before it is done (409), after it expired (410) or of a job that ran
# out of time (504): the job's state, counted once where it failed, not a failed request (else
# a client polling /audio adds an error per poll).
AUDIO_ROUTE, JOB_STATE_ANSWERS = "/v1/jobs/{job_id}/audio", (409, 410, 504)
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc", "/static/")
# The web page (``GET /``, exactly: a prefix "/" would open every path) needs no key either;
# it holds no data, and the API requests it makes carry the key its user enters.
PAGE_PATHS = ("/",)
STATIC = Path(__file__).parent / "static"
# The page loads nothing from elsewhere; its audio players play blob: URLs.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def create_app(settings: ServeSettings, models: ServedModels) -> FastAPI:
    """The service's application; the service starts and stops with the app's lifespan."""
    service = Service(settings, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not service.running:  # ``audiotok serve`` opens it first, to report errors in one line
            open_service(service)
        try:
            yield
        finally:
            close_service(service)

    app = FastAPI(
        title="audiotok",
        version=__version__,
        lifespan=lifespan,
        description="Neural audio compression and generation (docs/SERVING.md).",
    )
    app.state.service = service
    errors.install(app)
    app.add_middleware(BodyCap, limit=settings.max_upload_bytes + MULTIPART_ALLOWANCE)
    app.include_router(codec_routes.router)
    app.include_router(job_routes.router)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        start = time.perf_counter()
        # Found before routing, which rewrites the scope: refused requests (401, 413) and routes
        # that set no scope["route"] (/docs, /openapi.json, /static) keep their template too.
        planned = _route_of(app.router.routes, dict(request.scope))
        with span(f"http {request.method}", request_id=request.state.request_id) as current:
            response = _refusal(request, settings)
            if response is None:
                try:
                    response = await call_next(request)
                except Exception as exc:  # else Starlette's outermost handler answers: no log
                    service.logger.exception(
                        "internal error", extra={"fields": {"request_id": request.state.request_id}}
                    )
                    response = errors.error_response(
                        500, "internal", f"{type(exc).__name__}: {exc}"
                    )
            route = getattr(request.scope.get("route"), "path", planned)
            if current is not None:
                current.update_name(f"http {request.method} {route}")
                current.set_attribute("http.status_code", response.status_code)
        elapsed = time.perf_counter() - start
        service.metrics.request_seconds.labels(route, str(response.status_code)).observe(elapsed)
        if response.status_code >= 400 and not (
            route == AUDIO_ROUTE and response.status_code in JOB_STATE_ANSWERS
        ):
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

    # HEAD too: load balancers and uptime monitors probe with it.
    @job_routes.get_and_head(app, "/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @job_routes.get_and_head(app, "/readyz", tags=["operations"])
    def readyz() -> Response:
        service.refresh_catalogue()
        worker_ok = service.worker is None or service.worker.is_alive()
        # A front end is ready once the generators it queues for have started somewhere.
        started = all(name in models.generators for name in models.elsewhere)
        ready = service.store is not None and worker_ok and started
        body = {
            "status": "ready" if ready else "not ready",
            "codecs": sorted(models.codecs),
            "generators": sorted(models.generators),
        }
        if not ready:
            return errors.error_response(
                503, "not_ready", "the queue, the worker or a generator is not running"
            )
        return JSONResponse(body)

    @app.get("/metrics", tags=["operations"])
    def metrics() -> Response:
        service.update_queue_gauges()
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> FileResponse:
        """The web page: compress and compare, generate with progress (static/)."""
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def open_service(service: Service) -> None:
    """Starts the service and, when its settings name a port, its gRPC server.

    Raises:
        ServiceError: The state folder is taken, or the gRPC port can't be bound.
    """
    service.start()
    port = service.settings.grpc_port
    if port is None:
        return
    from .grpc_service import start_grpc  # imported here: HTTP alone needs no grpcio

    try:
        service.grpc_server = start_grpc(service, service.settings.host, port)
    except ServiceError:
        service.stop()
        raise


def close_service(service: Service) -> None:
    """Stops the gRPC server first (no call left on a closed queue), then the service."""
    if service.grpc_server is not None:
        from .grpc_service import stop_grpc

        stop_grpc(service.grpc_server)
        service.grpc_server = None
    service.stop()


def _route_of(routes: Any, scope: dict[str, Any]) -> str:
    """The template of the route ``scope`` goes to (a bounded label, never the raw path), or
    ``unmatched``; included routers are searched, a mount is its prefix (``/static``)."""
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            # FastAPI 0.16x wraps included routers (no .routes; the router is original_router)
            inner = getattr(route, "routes", None) or getattr(
                getattr(route, "original_router", None), "routes", None
            )
            if inner:
                return _route_of(inner, {**scope, **child})
            return getattr(route, "path", "unmatched")
    return "unmatched"


def _refusal(request: Request, settings: ServeSettings) -> Response | None:
    """The answer to a request refused before routing: a missing key, an upload too large."""
    path = request.url.path
    if settings.api_key and path not in PAGE_PATHS and not path.startswith(OPEN_PATHS):
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
    if (
        length
        and length.isdigit()
        and int(length) > settings.max_upload_bytes + MULTIPART_ALLOWANCE
    ):
        return errors.error_response(
            413, "too_large", f"uploads are limited to {settings.max_upload_bytes} bytes"
        )
    return None
