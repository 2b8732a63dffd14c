"""Every error answer is ``{"error": {"code": ..., "message": ...}}`` with its HTTP status.

=====  ======================  ================================================================
code   status                  when
=====  ======================  ================================================================
400    ``bad_parameters``      a parameter is missing, of the wrong type or out of range
400    ``bad_file``            compressed data or tokens that can't be read
401    ``unauthorized``        an API key is set and the request has none or another
404    ``not_found``           no such job
409    ``not_ready``...        the job's audio is not there yet (queued, running); ``job_failed``
                               (failed: deadline, ``poisoned``...), ``cancelled``
410    ``expired``             the job's audio outlived the cache's TTL
413    ``too_large``           the upload is over the service's cap
415    ``unreadable_audio``    audio that can't be decoded
422    ``unknown_model``       a model this service did not load
429    ``queue_full``          too many jobs queued (with ``Retry-After``)
503    ``not_ready``           the generator is still loading (with ``Retry-After``)
504    ``deadline_exceeded``   the job was stopped at its deadline
=====  ======================  ================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    AudioError,
    AudiotokError,
    CheckpointError,
    FormatError,
    TokensError,
    TokensTooLargeError,
)
from .models import GeneratorStarting, UnknownModel


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer's JSON (for the OpenAPI schema)."""

    error: ErrorDetail


_WHEN = {
    400: "bad_parameters, bad_file",
    401: "unauthorized",
    404: "not_found",
    409: "not_ready, job_failed, cancelled",
    410: "expired",
    413: "too_large",
    415: "unreadable_audio",
    422: "unknown_model",
    429: "queue_full (Retry-After)",
    503: "not_ready: the generator is still loading (Retry-After)",
    504: "deadline_exceeded",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a router's errors (their codes, as in the table above);
    declaring 422 also keeps FastAPI from documenting its own validation error, which this
    service answers as 400."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


class ApiError(Exception):
    """An error answer: ``status``, a stable ``code`` and a one-line ``message``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(
    status: int, code: str, message: str, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def api_error_of(exc: AudiotokError) -> ApiError:
    """The answer for an audiotok error: its status and code by its kind, its first line."""
    text = exc.http_message or str(exc)  # recover=true, not recover=True
    message = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, UnknownModel):
        return ApiError(422, "unknown_model", message)
    if isinstance(exc, GeneratorStarting):
        return ApiError(503, "not_ready", message, headers={"Retry-After": "5"})
    if isinstance(exc, AudioError):
        return ApiError(415, "unreadable_audio", message)
    if isinstance(exc, TokensTooLargeError):
        return ApiError(413, "too_large", message)
    if isinstance(exc, (FormatError, TokensError, CheckpointError)):
        return ApiError(400, "bad_file", message)
    return ApiError(400, "bad_parameters", message)


def validation_message(errors: Sequence[Any]) -> str:
    """One line for FastAPI's validation errors: the first one, by its field."""
    first = errors[0] if errors else {}
    loc, kind = tuple(first.get("loc", ())), first.get("type", "")
    if kind == "json_invalid":  # loc is ("body", character offset)
        return f"the body is not valid JSON (at character {loc[-1]})"
    if loc == ("body",) and kind in ("dict_type", "model_attributes_type"):
        return "the body must be a JSON object (Content-Type: application/json)"
    where = ".".join(str(p) for p in loc if p != "body")
    message = first.get("msg", "invalid")
    return f"{where}: {message}" if where else message


def without_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI ``schema`` less FastAPI's own 422 ``HTTPValidationError``, which it adds to
    every route with parameters: this service answers a failed validation as 400
    ``bad_parameters`` with the usual error body (a route's own 422 is ``unknown_model``)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
                responses.setdefault("400", {"description": _WHEN[400], "content": _ERROR_BODY})
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in str(schema.get("paths")):
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
    return schema


_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def install(app: FastAPI) -> None:
    """Routes every error through :func:`error_response`, never a traceback, and documents
    them so (:func:`without_validation_422`)."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = without_validation_422(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(AudiotokError)
    async def audiotok_error(request: Request, exc: AudiotokError) -> JSONResponse:
        error = api_error_of(exc)
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "bad_parameters", validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        request.app.state.service.logger.exception("internal error")
        return error_response(500, "internal", f"{type(exc).__name__}: {exc}")
