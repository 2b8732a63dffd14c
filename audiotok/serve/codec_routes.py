"""``/v1/compress``, ``/v1/decompress``, ``/v1/encode``, ``/v1/decode``: the codec over HTTP.

Each request is answered in the request (a few seconds of audio code in milliseconds); the
codec runs one request at a time, so that concurrent requests don't fight over the cores.
Uploads are multipart (``audio`` or ``file``) or, for the decoding routes, the raw body
(saved and answered by :mod:`.uploads`).

The work goes file to file in the state's ``tmp`` folder, as the CLI's does: an upload longer
than ``STREAM_SECONDS`` is coded as a stream in bounded memory (the same bytes as
``audiotok compress``), and a small ``.atok`` of an hour decodes packet by packet rather than
in one pass that would take tens of GiB. Answers are sent from their files. The ``*_bytes``
functions, bytes in and out, are what gRPC calls. Errors never name the server's files: the
upload is ``upload`` in their messages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ..audio.blocks import audio_info
from ..codec.base import Codec
from ..codec.tokens import Tokens
from ..compression.container.ecdc import ECDC_MODELS, read_ecdc, read_ecdc_header, write_ecdc
from ..compression.container.ecdc import MAGIC as ECDC_MAGIC
from ..compression.container.reader import AtokReader
from ..compression.files import compress_file, decode_tokens_file, decompress_file, encode_file
from ..errors import AudioError, AudiotokError, TokensTooLargeError
from ..zoo.codec_cards import find_card
from .errors import ApiError, error_responses
from .losses import DECOMPRESS_HEADERS, Loss
from .requests import AudioFormat
from .service import Service
from .uploads import (
    UPLOAD_BODY,
    file_answer,
    keep,
    save_body_or_file,
    save_upload,
    scratch,
    single_parts,
    upload_stem,
)

router = APIRouter(
    prefix="/v1",
    tags=["codec"],
    responses=error_responses(400, 401, 413, 415, 422),
    dependencies=[Depends(single_parts)],
)
AUDIO_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
}
OutputFormat = AudioFormat  # what generation writes, too
T = TypeVar("T")
CompressedFormat = Literal["atok", "ecdc"]
TokensFormat = Literal["npz", "safetensors"]


def _service(request: Request) -> Service:
    return request.app.state.service


def check_bitrate(codec: Codec, bitrate: float | None) -> float:
    """The bitrate a request asks of ``codec`` (its default if None), or 400."""
    try:
        return codec.check_bandwidth(bitrate)
    except AudioError as exc:
        raise ApiError(400, "bad_parameters", f"bitrate: {exc}") from None


@router.post("/compress", response_class=Response)
def compress(
    request: Request,
    audio: Annotated[UploadFile, File(description="Any audio file libsndfile reads")],
    bitrate: Annotated[
        float | None, Form(description="kbps; the model's default if absent")
    ] = None,
    model: Annotated[str | None, Form(description="A codec this service loaded")] = None,
    format: Annotated[CompressedFormat, Form()] = "atok",
    downmix: Annotated[
        bool, Form(description="Code more channels than the codec's as the codec's")
    ] = False,
) -> Response:
    """Audio in, compressed bytes out (``.atok``, or the ``encodec`` package's ``.ecdc``)."""
    service = _service(request)
    codec = service.models.codec(model)
    with scratch(service) as new:
        source = new("upload", "")
        save_upload(service, audio, source)
        target, seconds = compress_path(service, codec, source, bitrate, format, downmix, new)
        answer = keep(target)
    return file_answer(
        answer,
        "application/octet-stream",
        f"{upload_stem(audio)}.{format}",
        {"X-Audio-Seconds": f"{seconds:.3f}", "X-Model": codec.model_id},
    )


def check_seconds(service: Service, seconds: float) -> None:
    """413 for a request whose audio is longer than ``--max-audio-seconds``, before any work."""
    limit = service.settings.max_audio_seconds
    if seconds > limit:
        raise ApiError(
            413, "too_large", f"{seconds:.0f} s of audio; this service codes at most {limit:g} s"
        )


def _served_lm(model: str) -> Any:
    """The entropy model of an LM-coded ``.ecdc`` of a served codec; its absence is said
    without the server's cache folders."""
    from ..compression.container.ecdc_lm import load_ecdc_lm  # torch: only for LM-coded files

    try:
        return load_ecdc_lm(model)
    except AudiotokError:
        raise ApiError(
            422, "unknown_model", f"LM-coded .ecdc of {model}: its entropy model is not here"
        ) from None


def compress_path(
    service: Service,
    codec: Codec,
    source: Path,
    bitrate: float | None,
    format: str,
    downmix: bool,
    new: Callable[[str, str], Path],
) -> tuple[Path, float]:
    """The audio file ``source`` compressed by ``codec`` (``atok`` or ``ecdc``) into a new
    scratch file; that file and the audio's seconds."""
    bitrate = check_bitrate(codec, bitrate)
    if format == "ecdc" and getattr(find_card(codec.model_id), "name", None) not in ECDC_MODELS:
        raise ApiError(
            400,
            "bad_parameters",
            f"format: {codec.model_id} has no .ecdc format; use {' or '.join(ECDC_MODELS)}",
        )
    info = audio_info(source)
    check_seconds(service, info.frames / info.samplerate)
    target = new("output", f".{format}")
    with service.models.codec_lock:
        if format == "ecdc":  # long ones coded as a stream, as the CLI codes them
            tokens = encode_file(source, codec, bandwidth=bitrate, downmix=downmix)
            target.write_bytes(write_ecdc(tokens, codec.model_id))
        else:
            compress_file(source, target, codec, bandwidth=bitrate, downmix=downmix)
    return target, info.frames / info.samplerate


def compress_bytes(
    service: Service,
    codec: Codec,
    audio: bytes,
    bitrate: float | None,
    format: str,
    downmix: bool = False,
) -> tuple[bytes, float]:
    """An audio file compressed by ``codec`` (``atok`` or ``ecdc``), and its seconds."""
    return _through_files(
        service,
        audio,
        "",
        lambda source, new: compress_path(service, codec, source, bitrate, format, downmix, new),
    )


def decompress_path(
    service: Service,
    source: Path,
    format: str,
    new: Callable[[str, str], Path],
    recover: bool = False,
) -> tuple[Path, int, Loss]:
    """``.atok`` or ``.ecdc`` data decoded by the codec it names, into a new scratch audio
    file of ``format``; that file, its sample rate and what was lost. ``recover``: an
    ``.atok`` cut off or damaged is decoded as far as it goes, damage concealed (as
    ``audiotok decompress --recover``)."""
    target = new("output", f".{format}")
    with open(source, "rb") as f:
        data = f.read(4)
    if data == ECDC_MAGIC:
        data = source.read_bytes()
        # The header first: a codec this service does not serve is 422 before an LM-coded
        # file's entropy model is looked for (downloaded, or an error naming our caches).
        header = read_ecdc_header(data)
        codec = service.models.codec(header.model)
        check_seconds(service, header.duration)
        tokens = read_ecdc(data, framework="np", lm_loader=_served_lm)  # np: either kind
        with service.models.codec_lock:  # long ones as a stream: a few kB can hold hours
            decode_tokens_file(tokens, target, codec, overwrite=True)
        return target, codec.sample_rate, Loss()
    with AtokReader(source) as reader:
        header, index = reader.header, reader.index()
        codec = service.models.codec(header.model_id)
        length = index.length if index is not None else header.length
        if length is not None:
            check_seconds(service, length / header.sample_rate)
        else:  # a stream without either is as long as its packets: counted before decoding
            reader.priors = codec.entropy_priors  # (packets() starts again at the first one)
            packets = reader.packets(recover=recover)
            frames = max((p.first_frame + p.num_frames for _, p in packets), default=0)
            check_seconds(service, frames / float(header.frame_rate))
    with service.models.codec_lock:  # with recover, what was lost comes back (Decoded)
        decoded = decompress_file(source, target, codec, strategy="clip", recover=recover)
    return target, audio_info(target).samplerate, Loss.of(decoded)


@router.post(
    "/decompress",
    response_class=Response,
    openapi_extra=UPLOAD_BODY,
    responses={200: {"headers": DECOMPRESS_HEADERS}},
)
async def decompress(
    request: Request,
    format: Annotated[OutputFormat, Query()] = "wav",
    recover: Annotated[bool, Query()] = False,
) -> Response:
    """``.atok`` or ``.ecdc`` bytes (body or multipart ``file``) in, audio out; with
    ``recover``, an ``.atok`` cut off or damaged decodes as far as it goes, what was lost
    silent, and ``X-Lost-Seconds`` and ``X-Problems`` say how much and where."""

    def work(
        service: Service, source: Path, fmt: str, new: Callable[[str, str], Path]
    ) -> tuple[Path, int, dict[str, str]]:
        target, rate, loss = decompress_path(service, source, fmt, new, recover)
        return target, rate, loss.headers() if recover else {}  # asked for: what recover did

    return await _decoded_answer(request, format, ".atok", work)


def decompress_bytes(
    service: Service, data: bytes, format: str, recover: bool = False
) -> tuple[bytes, tuple[int, Loss]]:
    """``.atok`` or ``.ecdc`` bytes decoded by the codec they name: audio file, then its
    sample rate and what was lost."""

    def work(source: Path, new: Callable[[str, str], Path]) -> tuple[Path, tuple[int, Loss]]:
        target, rate, loss = decompress_path(service, source, format, new, recover)
        return target, (rate, loss)

    return _through_files(service, data, ".atok", work)


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
    with scratch(service) as new:
        source = new("upload", "")
        save_upload(service, audio, source)
        target, tokens = encode_path(service, codec, source, bitrate, format, new)
        answer = keep(target)
    _, codebooks, frames = tokens.codes.shape
    return file_answer(
        answer,
        "application/octet-stream",
        f"{upload_stem(audio)}.{format}",
        {"X-Codebooks": str(codebooks), "X-Frames": str(frames)},
    )


def encode_path(
    service: Service,
    codec: Codec,
    source: Path,
    bitrate: float | None,
    format: str,
    new: Callable[[str, str], Path],
) -> tuple[Path, Tokens]:
    """The audio file ``source``'s tokens by ``codec``, into a new scratch file of ``format``
    (npz or safetensors); that file and the tokens."""
    bitrate = check_bitrate(codec, bitrate)
    info = audio_info(source)
    check_seconds(service, info.frames / info.samplerate)
    with service.models.codec_lock:  # long ones coded as a stream, in bounded memory
        # downmix: tokens record no layout to give back, so any channels are converted to the
        # codec's (as Codec.encode converts them), none refused.
        tokens = encode_file(source, codec, bandwidth=bitrate, downmix=True)
    target = new("output", f".{format}")
    tokens.save(target)
    return target, tokens


def encode_bytes(
    service: Service, codec: Codec, audio: bytes, bitrate: float | None, format: str
) -> tuple[bytes, Tokens]:
    """An audio file's tokens by ``codec``, as a file of ``format`` (npz or safetensors)."""
    return _through_files(
        service,
        audio,
        "",
        lambda source, new: encode_path(service, codec, source, bitrate, format, new),
    )


def tokens_limits(service: Service) -> tuple[int, int, int]:
    """The largest codes ``[B, K, F]`` that ``/v1/decode`` reads: ``--max-audio-seconds`` of
    the served codec with the most frames, at its most codebooks, in up to 8 items (one is
    decoded; more are a 400, not a 413)."""
    seconds = service.settings.max_audio_seconds
    codecs = service.models.codecs.values()
    frames = max(c.num_frames(math.ceil(seconds * c.sample_rate)) for c in codecs)
    return 8, max(c.max_codebooks for c in codecs), frames


def decode_path(
    service: Service, source: Path, format: str, new: Callable[[str, str], Path]
) -> tuple[Path, int]:
    """Tokens of one item (an ``.npz`` or ``.safetensors`` file) decoded into a new scratch
    audio file of ``format``; that file and its sample rate."""
    # Any item count up to the limits: more than one is refused below as a bad request.
    items, codebooks, frames = tokens_limits(service)
    try:  # bounded before the codes are read: a small .npz of zeros inflates a thousandfold
        tokens = Tokens.load(source, framework="np", max_shape=(items, codebooks, frames))
    except TokensTooLargeError as exc:  # a 413 (uploads.scratch hides the file's path)
        limit = service.settings.max_audio_seconds
        raise TokensTooLargeError(f"{exc}; this service codes at most {limit:g} s") from None
    if tokens.codes.shape[0] != 1:
        raise ApiError(
            400,
            "bad_parameters",
            f"the tokens hold {tokens.codes.shape[0]} items; one audio file is one item",
        )
    codec = service.models.codec(tokens.model_id)
    check_seconds(service, tokens.length / tokens.sample_rate)
    target = new("output", f".{format}")
    with service.models.codec_lock:  # long ones as a stream: a few kB of codes can hold hours
        decode_tokens_file(tokens, target, codec, overwrite=True)
    return target, codec.sample_rate


@router.post("/decode", response_class=Response, openapi_extra=UPLOAD_BODY)
async def decode(request: Request, format: Annotated[OutputFormat, Query()] = "wav") -> Response:
    """Tokens (``.npz`` or ``.safetensors``, body or multipart ``file``) in, audio out."""
    return await _decoded_answer(
        request, format, ".tokens", lambda *args: (*decode_path(*args), {})
    )


def decode_bytes(service: Service, data: bytes, format: str) -> tuple[bytes, int]:
    """Tokens (``.npz`` or ``.safetensors`` bytes) decoded: audio file, sample rate."""
    return _through_files(
        service, data, ".tokens", lambda source, new: decode_path(service, source, format, new)
    )


# What turns a saved upload into an audio file (by decompress_path or decode_path): that file,
# its sample rate and the answer's other headers.
Decoder = Callable[
    [Service, Path, str, Callable[[str, str], Path]], tuple[Path, int, dict[str, str]]
]


async def _decoded_answer(request: Request, format: str, suffix: str, work: Decoder) -> Response:
    """A decoding route's answer: the upload saved (as ``suffix``), decoded by ``work``."""
    service = _service(request)
    with scratch(service) as new:
        source = new("upload", suffix)
        await save_body_or_file(request, source)
        target, rate, headers = await run_in_threadpool(work, service, source, format, new)
        answer = keep(target)
    headers = {"X-Sample-Rate": str(rate), **headers}
    return file_answer(answer, AUDIO_TYPES[format], f"audio.{format}", headers)


def _through_files(
    service: Service,
    data: bytes,
    suffix: str,
    work: Callable[[Path, Callable[[str, str], Path]], tuple[Path, T]],
) -> tuple[bytes, T]:
    """gRPC's bytes in, bytes out: ``data`` saved as an upload (``suffix``), ``work`` on it,
    its output file's bytes and what else it returned (the scratch files then removed)."""
    with scratch(service) as new:
        source = new("upload", suffix)
        source.write_bytes(data)
        target, extra = work(source, new)
        return target.read_bytes(), extra
