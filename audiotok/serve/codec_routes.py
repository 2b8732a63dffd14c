"""``/v1/compress``, ``/v1/decompress``, ``/v1/encode``, ``/v1/decode``: the codec over HTTP.

Each request is answered in the request (a few seconds of audio code in milliseconds); the
codec runs one request at a time, so that concurrent requests don't fight over the cores.
Uploads are multipart (``audio`` or ``file``) or, for the decoding routes, the raw body.
The work itself is in ``*_bytes`` functions of bytes in, bytes out, which gRPC calls too.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ..audio.read import read_audio
from ..audio.write import write_audio
from ..codec.base import Codec
from ..codec.tokens import Tokens
from ..compression.container.ecdc import MAGIC as ECDC_MAGIC
from ..compression.container.ecdc import read_ecdc, write_ecdc
from ..compression.container.reader import AtokReader
from ..compression.decode import decode_stream
from ..compression.encode import compress as compress_audio
from .errors import ApiError
from .requests import AudioFormat
from .service import Service

router = APIRouter(prefix="/v1", tags=["codec"])

AUDIO_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
}
OutputFormat = AudioFormat  # what generation writes, too
CompressedFormat = Literal["atok", "ecdc"]
TokensFormat = Literal["npz", "safetensors"]


def _service(request: Request) -> Service:
    return request.app.state.service


def check_size(service: Service, data: bytes) -> bytes:
    """``data``, unless it is over the service's upload cap (413)."""
    if len(data) > service.settings.max_upload_bytes:
        raise ApiError(
            413, "too_large", f"uploads are limited to {service.settings.max_upload_bytes} bytes"
        )
    return data


def _read_upload(service: Service, upload: UploadFile) -> bytes:
    return check_size(service, upload.file.read(service.settings.max_upload_bytes + 1))


def _read_audio(data: bytes) -> tuple[Any, int]:
    return read_audio(io.BytesIO(data))


def _audio_bytes(service: Service, audio: Any, rate: int, format: str) -> bytes:
    """``audio [C, T]`` as a file of ``format`` (written through the state's tmp folder)."""
    path = service.tmp / f"{uuid.uuid4().hex}.{format}"
    try:
        write_audio(path, audio, rate, strategy="clip")
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


async def _body_or_file(request: Request) -> bytes:
    """The upload of a decoding route: a multipart ``file`` (or ``audio``), else the body."""
    service = _service(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file") or form.get("audio")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "bad_parameters", "multipart uploads carry the data as 'file'")
        return await run_in_threadpool(_read_upload, service, upload)
    data = check_size(service, await request.body())
    if not data:
        raise ApiError(400, "bad_parameters", "no data: send the file as the body or as 'file'")
    return data


@router.post("/compress", response_class=Response)
def compress(
    request: Request,
    audio: Annotated[UploadFile, File(description="Any audio file libsndfile reads")],
    bitrate: Annotated[
        float | None, Form(description="kbps; the model's default if absent")
    ] = None,
    model: Annotated[str | None, Form(description="A codec this service loaded")] = None,
    format: Annotated[CompressedFormat, Form()] = "atok",
) -> Response:
    """Audio in, compressed bytes out (``.atok``, or the ``encodec`` package's ``.ecdc``)."""
    service = _service(request)
    codec = service.models.codec(model)
    data, seconds = compress_bytes(service, codec, _read_upload(service, audio), bitrate, format)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"X-Audio-Seconds": f"{seconds:.3f}", "X-Model": codec.model_id},
    )


def compress_bytes(
    service: Service, codec: Codec, audio: bytes, bitrate: float | None, format: str
) -> tuple[bytes, float]:
    """An audio file compressed by ``codec`` (``atok`` or ``ecdc``), and its seconds."""
    wav, rate = _read_audio(audio)
    with service.models.codec_lock:
        if format == "ecdc":
            tokens = codec.encode(wav, sample_rate=rate, bandwidth=bitrate)
            data = write_ecdc(tokens, codec.model_id)
        else:
            data = compress_audio(codec, wav, rate, bitrate)
    return data, wav.shape[-1] / rate


def decompress_bytes(service: Service, data: bytes, format: str) -> tuple[bytes, int]:
    """``.atok`` or ``.ecdc`` bytes decoded by the codec they name: audio file, sample rate."""
    if data[:4] == ECDC_MAGIC:
        tokens = read_ecdc(data, framework="np")  # the codec takes either kind
        codec = service.models.codec(tokens.model_id)
        with service.models.codec_lock:
            audio = codec.decode(tokens)[0]
        return _audio_bytes(service, audio, codec.sample_rate, format), codec.sample_rate
    with AtokReader(data) as reader:
        model_id = reader.header.model_id
    codec = service.models.codec(model_id)
    with service.models.codec_lock:
        decoded = decode_stream(data, codec)
    return _audio_bytes(service, decoded.audio, decoded.sample_rate, format), decoded.sample_rate


@router.post("/decompress", response_class=Response)
async def decompress(
    request: Request, format: Annotated[OutputFormat, Query()] = "wav"
) -> Response:
    """``.atok`` or ``.ecdc`` bytes (body or multipart ``file``) in, audio out."""
    service = _service(request)
    data = await _body_or_file(request)
    audio, rate = await run_in_threadpool(decompress_bytes, service, data, format)
    return Response(audio, media_type=AUDIO_TYPES[format], headers={"X-Sample-Rate": str(rate)})


@router.post("/encode", response_class=Response)
def encode(
    request: Request,
    audio: Annotated[UploadFile, File()],
    bitrate: Annotated[float | None, Form()] = None,
    model: Annotated[str | None, Form()] = None,
    format: Annotated[TokensFormat, Form()] = "npz",
) -> Response:
    """Audio in, tokens out: codes ``[1, K, F]`` with what decoding needs (docs/TOKENS.md)."""
    service = _service(request)
    codec = service.models.codec(model)
    data, tokens = encode_bytes(service, codec, _read_upload(service, audio), bitrate, format)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"X-Codebooks": str(tokens.codes.shape[1]), "X-Frames": str(tokens.codes.shape[2])},
    )


def encode_bytes(
    service: Service, codec: Codec, audio: bytes, bitrate: float | None, format: str
) -> tuple[bytes, Tokens]:
    """An audio file's tokens by ``codec``, as a file of ``format`` (npz or safetensors)."""
    wav, rate = _read_audio(audio)
    with service.models.codec_lock:
        tokens = codec.encode(wav, sample_rate=rate, bandwidth=bitrate)
    path = service.tmp / f"{uuid.uuid4().hex}.{format}"
    try:
        tokens.save(path)
        return path.read_bytes(), tokens
    finally:
        path.unlink(missing_ok=True)


def decode_bytes(service: Service, data: bytes, format: str) -> tuple[bytes, int]:
    """Tokens (``.npz`` or ``.safetensors`` bytes) decoded: audio file, sample rate."""
    suffix = ".npz" if data[:2] == b"PK" else ".safetensors"
    path = service.tmp / f"{uuid.uuid4().hex}{suffix}"
    try:
        path.write_bytes(data)
        tokens = Tokens.load(path, framework="np")
    finally:
        Path(path).unlink(missing_ok=True)
    codec = service.models.codec(tokens.model_id)
    with service.models.codec_lock:
        audio = codec.decode(tokens)[0]
    return _audio_bytes(service, audio, codec.sample_rate, format), codec.sample_rate


@router.post("/decode", response_class=Response)
async def decode(request: Request, format: Annotated[OutputFormat, Query()] = "wav") -> Response:
    """Tokens (``.npz`` or ``.safetensors``, body or multipart ``file``) in, audio out."""
    service = _service(request)
    data = await _body_or_file(request)
    audio, _ = await run_in_threadpool(decode_bytes, service, data, format)
    return Response(audio, media_type=AUDIO_TYPES[format])
