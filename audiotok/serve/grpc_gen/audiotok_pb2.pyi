from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompressRequest(_message.Message):
    __slots__ = ("audio", "bitrate", "model", "format", "downmix")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    BITRATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DOWNMIX_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    bitrate: float
    model: str
    format: str
    downmix: bool
    def __init__(self, audio: _Optional[bytes] = ..., bitrate: _Optional[float] = ..., model: _Optional[str] = ..., format: _Optional[str] = ..., downmix: _Optional[bool] = ...) -> None: ...

class CompressReply(_message.Message):
    __slots__ = ("data", "audio_seconds", "model")
    DATA_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    audio_seconds: float
    model: str
    def __init__(self, data: _Optional[bytes] = ..., audio_seconds: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class DecompressRequest(_message.Message):
    __slots__ = ("data", "format", "recover")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    RECOVER_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    format: str
    recover: bool
    def __init__(self, data: _Optional[bytes] = ..., format: _Optional[str] = ..., recover: _Optional[bool] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("audio", "bitrate", "model", "format")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    BITRATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    bitrate: float
    model: str
    format: str
    def __init__(self, audio: _Optional[bytes] = ..., bitrate: _Optional[float] = ..., model: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class EncodeReply(_message.Message):
    __slots__ = ("tokens", "codebooks", "frames")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CODEBOOKS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    tokens: bytes
    codebooks: int
    frames: int
    def __init__(self, tokens: _Optional[bytes] = ..., codebooks: _Optional[int] = ..., frames: _Optional[int] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("tokens", "format")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    tokens: bytes
    format: str
    def __init__(self, tokens: _Optional[bytes] = ..., format: _Optional[str] = ...) -> None: ...

class AudioReply(_message.Message):
    __slots__ = ("audio", "sample_rate", "format", "lost_seconds", "problems")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LOST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    sample_rate: int
    format: str
    lost_seconds: float
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, audio: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., format: _Optional[str] = ..., lost_seconds: _Optional[float] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "model", "duration", "seed", "use_sampling", "top_k", "top_p", "temperature", "cfg_coef", "format", "cache")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    USE_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    CFG_COEF_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: str
    duration: float
    seed: int
    use_sampling: bool
    top_k: int
    top_p: float
    temperature: float
    cfg_coef: float
    format: str
    cache: bool
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[str] = ..., duration: _Optional[float] = ..., seed: _Optional[int] = ..., use_sampling: _Optional[bool] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., temperature: _Optional[float] = ..., cfg_coef: _Optional[float] = ..., format: _Optional[str] = ..., cache: _Optional[bool] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("accepted", "progress", "chunk", "done")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    progress: Progress
    chunk: AudioChunk
    done: Done
    def __init__(self, accepted: _Optional[_Union[Accepted, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., chunk: _Optional[_Union[AudioChunk, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("id", "cache_hit", "joined", "model", "subscription")
    ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    cache_hit: bool
    joined: bool
    model: str
    subscription: str
    def __init__(self, id: _Optional[str] = ..., cache_hit: _Optional[bool] = ..., joined: _Optional[bool] = ..., model: _Optional[str] = ..., subscription: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("status", "progress")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    status: str
    progress: float
    def __init__(self, status: _Optional[str] = ..., progress: _Optional[float] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("id", "format", "size")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    id: str
    format: str
    size: int
    def __init__(self, id: _Optional[str] = ..., format: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("id", "subscription")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    subscription: str
    def __init__(self, id: _Optional[str] = ..., subscription: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("created", "started", "finished", "queue_wait", "run")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    created: float
    started: float
    finished: float
    queue_wait: float
    run: float
    def __init__(self, created: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., queue_wait: _Optional[float] = ..., run: _Optional[float] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "status", "model", "progress", "cache_hit", "attempts", "batch_size", "request_json", "timings", "error", "result_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    model: str
    progress: float
    cache_hit: bool
    attempts: int
    batch_size: int
    request_json: str
    timings: Timings
    error: JobError
    result_url: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., model: _Optional[str] = ..., progress: _Optional[float] = ..., cache_hit: _Optional[bool] = ..., attempts: _Optional[int] = ..., batch_size: _Optional[int] = ..., request_json: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., result_url: _Optional[str] = ...) -> None: ...
