"""``audiotok serve``: the HTTP service (docs/SERVING.md)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import device_option, handle_errors, import_torch


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free port, printed at start).",
)
@click.option(
    "--codec",
    "codecs",
    multiple=True,
    metavar="NAME[=PATH]",
    help="Codec to serve (repeatable; default: the packaged audiotok_24khz).",
)
@click.option(
    "--generator",
    "generators",
    multiple=True,
    metavar="NAME[=PATH]",
    help="MusicGen/AudioGen model for /v1/generate (repeatable; default: none).",
)
@click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".audiotok-serve"),
    show_default=True,
    help="Folder of the job queue and generated audio (kept across restarts).",
)
@click.option(
    "--max-batch",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Generation jobs per batched LM pass at most.",
)
@click.option(
    "--batch-wait-ms",
    default=50.0,
    show_default=True,
    type=click.FloatRange(0),
    help="How long a batch waits for more compatible jobs.",
)
@click.option(
    "--api-key",
    envvar="AUDIOTOK_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' on /v1 (or $AUDIOTOK_API_KEY).",
)
@click.option(
    "--max-upload-mb",
    default=64.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Largest upload accepted.",
)
@click.option(
    "--max-duration",
    default=120.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Longest generation (seconds) accepted.",
)
@click.option(
    "--max-queued",
    default=256,
    show_default=True,
    type=click.IntRange(1),
    help="Queued jobs beyond which requests get 429.",
)
@click.option(
    "--cache-ttl",
    default=86400.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a generated result answers identical requests.",
)
@click.option(
    "--lease",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a running job stays claimed without progress.",
)
@click.option(
    "--deadline-per-second",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="A job's deadline: this many seconds per second of audio asked for...",
)
@click.option(
    "--min-deadline",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="...and never less than this many seconds.",
)
@device_option
@handle_errors
def serve(
    host: str,
    port: int,
    codecs: tuple[str, ...],
    generators: tuple[str, ...],
    state: Path,
    max_batch: int,
    batch_wait_ms: float,
    api_key: str | None,
    max_upload_mb: float,
    max_duration: float,
    max_queued: int,
    cache_ttl: float,
    lease: float,
    deadline_per_second: float,
    min_deadline: float,
    device: str,
) -> None:
    """Serve compression and generation over HTTP until stopped (Ctrl-C or SIGTERM).

    Models are loaded once at start; jobs and results persist in --state across restarts.
    """
    import_torch()
    import uvicorn

    from ..serve.app import create_app
    from ..serve.models import ServedModels, load_codecs, load_generator
    from ..serve.service import ServeSettings

    models = ServedModels(
        codecs=load_codecs(list(codecs) or ["audiotok_24khz"], device=device),
        generators={},
    )
    for spec in generators:
        name, _, source = spec.partition("=")
        models.generators[name] = load_generator(name, source or name, device=device)
    settings = ServeSettings(
        state=state,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        api_key=api_key,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_duration=max_duration,
        max_queued=max_queued,
        cache_ttl=cache_ttl,
        lease=lease,
        deadline_per_second=deadline_per_second,
        min_deadline=min_deadline,
    )
    app = create_app(settings, models)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    server.run()
