"""``audiotok serve``: the HTTP service (docs/SERVING.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .common import backend_option, device_option, fail, handle_errors, import_torch


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
    "--grpc-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Also serve gRPC (audiotok/serve/audiotok.proto) on this port, same queue "
    "(0: any free port, logged; default: no gRPC).",
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
    "--store",
    metavar="URL",
    default=None,
    help="Keep the queue and results in Redis (redis://HOST:PORT/DB) instead of --state: "
    "services on several machines share it (pip install 'audiotok[ray]' or redis).",
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
    "--max-batch-seconds",
    default=480.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Jobs x seconds of audio per LM pass at most (bounds accelerator memory).",
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
    "--max-audio-seconds",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Longest audio one compress/encode/decompress/decode request may stand for.",
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
    "--rollout",
    "rollouts",
    multiple=True,
    metavar="NAME:VERSION=SHARE",
    help="Send SHARE (0-1) of the requests for generator NAME to generator VERSION (repeatable).",
)
@click.option(
    "--otel-exporter",
    type=click.Choice(["none", "console", "otlp"]),
    default="none",
    show_default=True,
    help="OpenTelemetry spans per request and job: off, to stdout, or OTLP ($OTEL_EXPORTER_*).",
)
@click.option(
    "--ray",
    "on_ray",
    is_flag=True,
    help="Run as a Ray Serve application: --replicas copies on one shared --state "
    "(pip install 'audiotok[ray]'; docs/SCALING.md).",
)
@click.option("--address", metavar="ADDR", help="With --ray: the cluster (default: a local Ray).")
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --ray: HTTP replicas of the service (each with its models and worker, unless "
    "--generator-replicas).",
)
@click.option(
    "--generator-replicas",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --ray: run the generators in this many replicas of their own (one GPU each "
    "with --device cuda), scaled apart from the HTTP replicas.",
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
@backend_option
@handle_errors
def serve(
    host: str,
    port: int,
    grpc_port: int | None,
    codecs: tuple[str, ...],
    generators: tuple[str, ...],
    state: Path,
    store: str | None,
    max_batch: int,
    batch_wait_ms: float,
    max_batch_seconds: float,
    api_key: str | None,
    max_upload_mb: float,
    max_duration: float,
    max_audio_seconds: float,
    max_queued: int,
    cache_ttl: float,
    lease: float,
    rollouts: tuple[str, ...],
    otel_exporter: str,
    on_ray: bool,
    address: str | None,
    replicas: int,
    generator_replicas: int,
    deadline_per_second: float,
    min_deadline: float,
    device: str,
    backend: str,
) -> None:
    """Serve compression and generation over HTTP (and gRPC) until stopped (Ctrl-C, SIGTERM).

    Models are loaded once at start; jobs and results persist in --state across restarts.
    """
    # The settings both ways of serving take (ServeSettings' fields).
    settings = dict(
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_batch_seconds=max_batch_seconds,
        api_key=api_key,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_duration=max_duration,
        max_audio_seconds=max_audio_seconds,
        max_queued=max_queued,
        cache_ttl=cache_ttl,
        lease=lease,
        deadline_per_second=deadline_per_second,
        min_deadline=min_deadline,
        store=store,
    )
    if generator_replicas and not on_ray:
        raise click.UsageError("--generator-replicas is for --ray")
    if on_ray:
        if grpc_port is not None:
            raise click.UsageError("--grpc-port is for a single process, not --ray")
        options = dict(
            codecs=list(codecs),
            generators=list(generators),
            rollouts=list(rollouts),
            device=device,
            backend=backend,
            otel_exporter=otel_exporter,
            state=str(state.resolve()),
            generator_replicas=generator_replicas,
            generator_num_gpus=1 if generator_replicas and device.startswith("cuda") else 0,
            **settings,
        )
        _serve_on_ray(options, host, port, address, replicas)
        return
    # Codecs on the onnx backend (or given as export folders) run without torch.
    if generators or rollouts:
        import_torch()
    for spec in codecs or ("",):  # none: the default codec
        import_torch(backend, spec.partition("=")[2] or spec or None)
    import uvicorn

    from ..serve.app import create_app, open_service
    from ..serve.models import load_served_models
    from ..serve.service import ServeSettings
    from ..serve.tracing import setup_tracing

    # What can be refused in one line is refused before the models load (minutes for MusicGen).
    if api_key is None and os.environ.get("AUDIOTOK_API_KEY") == "":  # click reads it as unset
        fail("AUDIOTOK_API_KEY is set but empty: give the key, or unset it to serve without one")
    serve_settings = ServeSettings(state=state, host=host, grpc_port=grpc_port, **settings)
    setup_tracing(otel_exporter)
    # Closed on every way out: a model or the state folder refused, or the server's end.
    with _listening_socket(host, port) as sock:
        models = load_served_models(
            list(codecs), list(generators), list(rollouts), device, backend=backend,
            local_generators=True,  # one process: a rollout names generators loaded here
        )  # fmt: skip
        app = create_app(serve_settings, models)
        open_service(app.state.service)  # errors as one line, before the server starts
        config = uvicorn.Config(app, log_config=None, access_log=False)
        uvicorn.Server(config).run(sockets=[sock])


def _listening_socket(host: str, port: int) -> Any:
    """A socket bound to ``host:port`` for uvicorn; a port in use or a bad host is one line
    here (uvicorn's own bind, after start-up, printed a bare errno and exited with 3)."""
    import socket

    sock = None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if sock is not None:
            sock.close()
        fail(f"can't listen on {host}:{port}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock


def _serve_on_ray(options: dict, host: str, port: int, address: str | None, replicas: int) -> None:
    """Deploys the Ray Serve application and waits until interrupted (then removes it)."""
    import signal
    import threading

    try:
        import ray
        from ray import serve
    except ImportError:
        fail("--ray needs Ray Serve: pip install 'audiotok[ray]'")
    from ..serve.ray_app import application

    ray.init(address=address, include_dashboard=False, logging_level="ERROR")
    stop = threading.Event()
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application({**options, "replicas": replicas}), name="audiotok", route_prefix="/")
        # After Ray's start-up, which installs handlers of its own.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        click.echo(f"audiotok: serving on http://{host}:{port} with {replicas} replicas", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        serve.shutdown()
        ray.shutdown()
