"""A request's files: uploads saved under the state's ``tmp`` folder (within the upload cap),
the scratch files of its work, and answers sent from a file.

Example (a route's body)::

    with scratch(service) as new:
        source = new("upload", "")            # removed when the block ends
        save_upload(service, upload, source)  # 413 over the cap, 400 if empty
        ...                                   # an audiotok error names "upload", not the path
        answer = keep(target)                 # survives the block; file_answer removes it
    return file_answer(answer, "audio/wav", "talk.wav", {})
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from ..errors import AudiotokError
from .errors import ApiError, api_error_of
from .service import Service

# The decoding routes read their upload themselves (raw body or multipart), so the schema
# says what they take.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


# A multipart body holds its boundaries and part headers beside the file.
MULTIPART_ALLOWANCE = 64 * 1024


class BodyCap:
    """ASGI middleware: a request body past ``limit`` bytes is cut off with a 413 as it
    arrives, whatever its framing. The Content-Length check (``app._refusal``) misses chunked
    bodies, and Starlette's form parser spools a whole multipart body to disk before any
    route sees it: a 2 MiB cap let 2.4 GB in before answering."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # FastAPI passes HTTPException through body parsing
                    raise HTTPException(
                        413, f"uploads are limited to {self.limit - MULTIPART_ALLOWANCE} bytes"
                    )
            return message

        await self.app(scope, counted, send)


def check_size(service: Service, data: bytes) -> bytes:
    """``data``, unless it is over the service's upload cap (413)."""
    if len(data) > service.settings.max_upload_bytes:
        raise _too_large(service)
    return data


def _too_large(service: Service) -> ApiError:
    return ApiError(
        413, "too_large", f"uploads are limited to {service.settings.max_upload_bytes} bytes"
    )


@contextmanager
def scratch(service: Service) -> Iterator[Callable[[str, str], Path]]:
    """Temporary files of one request, removed at the end: ``new(name, suffix)`` gives one.

    An audiotok error inside becomes its HTTP answer with each file's path replaced by its
    ``name`` (``upload``, ``output``): the client never learns the server's folders.
    """
    made: dict[Path, str] = {}

    def new(name: str, suffix: str) -> Path:
        path = service.tmp / f"{uuid.uuid4().hex}{suffix}"
        made[path] = name
        return path

    try:
        yield new
    except AudiotokError as exc:
        error = api_error_of(exc)
        for path, name in made.items():
            error.message = error.message.replace(str(path), name)
        raise error from None
    finally:
        for path in made:
            path.unlink(missing_ok=True)


async def single_parts(request: Request) -> None:
    """A route dependency: 400 for a multipart body that sends a field more than once. Which
    of two ``audio`` parts was coded would be a guess (the last one was, silently)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return
    form = await request.form()  # parsed once per request: the route's own fields reuse it
    for key in dict.fromkeys(form.keys()):
        if (count := len(form.getlist(key))) > 1:
            raise ApiError(400, "bad_parameters", f"'{key}' is sent {count} times; send it once")


def save_upload(service: Service, upload: UploadFile, path: Path) -> None:
    """Copies a multipart upload (spooled by Starlette) to ``path``, up to the cap."""
    with open(path, "wb") as out:
        while chunk := upload.file.read(1 << 20):
            out.write(chunk)
            if out.tell() > service.settings.max_upload_bytes:
                raise _too_large(service)
    if path.stat().st_size == 0:
        raise ApiError(400, "bad_parameters", f"{upload.filename or 'the upload'} is empty")


async def save_body_or_file(request: Request, path: Path) -> None:
    """The upload of a decoding route, a multipart ``file`` (or ``audio``) or else the raw
    body, written to ``path``; the body is streamed, and cut off at the cap."""
    service = request.app.state.service
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file") or form.get("audio")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "bad_parameters", "multipart uploads carry the data as 'file'")
        await run_in_threadpool(save_upload, service, upload, path)
        return
    size = 0
    with open(path, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > service.settings.max_upload_bytes:
                raise _too_large(service)
            out.write(chunk)
    if size == 0:
        raise ApiError(400, "bad_parameters", "no data: send the file as the body or as 'file'")


def file_answer(path: Path, media_type: str, filename: str, headers: dict[str, str]) -> Response:
    """``path`` sent as the answer (an attachment named ``filename``), then removed."""
    return FileResponse(
        path,
        media_type=media_type,
        filename=filename,
        headers=headers,
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


def keep(path: Path) -> Path:
    """``path`` moved to a name :func:`scratch` does not remove (the answer's file)."""
    return path.rename(path.with_name(f"answer-{path.name}"))


def upload_stem(upload: UploadFile) -> str:
    """The upload's file name without its suffix, as an answer's name (``audio`` if none)."""
    name = Path(upload.filename or "audio").stem
    return "".join(c for c in name if c.isalnum() or c in "-_. ")[:100].strip() or "audio"
