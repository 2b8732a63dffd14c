"""``audiotok serve`` as a Ray Serve application: the same app, in replicas across a cluster.

Each HTTP replica builds the very application ``audiotok serve`` runs (:func:`create_app`:
same routes, errors, metrics, cache, dedup, deadlines) on one **shared** queue: any replica
answers any job, and a job whose replica dies is taken over by another when its lease
(``lease`` seconds) runs out. The queue is either

- Redis (``store=redis://HOST:PORT/DB``): queue, results and the generators' catalogue in one
  Redis that every node reaches; the way to run on several machines; or
- a state folder (``state=DIR``) on one machine's disk (SQLite: its locks do not hold on NFS).

Generation can scale apart from the HTTP front: with ``generator_replicas=N`` the generators
run in a deployment of their own (``audiotok-generators``: N replicas, ``generator_num_gpus``
each), whose replicas take batches from the shared queue, and the ``audiotok`` replicas load
only the codecs (compression stays on them) and queue generation jobs for the generators they
find in the queue's catalogue. Without it every replica loads every model and runs a worker.

Run it from the command line, ``audiotok serve --ray --replicas 2 ...``, or from Ray's own
tools with an import path and the options as arguments::

    serve run audiotok.serve.ray_app:application store=redis://10.0.0.5:6379/0 replicas=2 \\
        generators=musicgen-small generator_replicas=4 generator_num_gpus=1 device=cuda

Metrics are per replica (``/metrics`` answers from the replica that took the request); Ray's
own metrics export gathers replicas' figures on a cluster.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from .service import ServeSettings

_LISTS = ("codecs", "generators", "rollouts")


def _service_settings(options: dict[str, Any], role: str) -> ServeSettings:
    known = {f.name for f in fields(ServeSettings)}
    settings = ServeSettings(
        **{k: v for k, v in options.items() if k in known and k != "role"}, shared=True, role=role
    )
    settings.state = Path(settings.state)
    return settings


def build_app(options: dict[str, Any], role: str = "all") -> Any:
    """One HTTP replica's FastAPI application, its service started on the shared queue
    (``role="front"``: codecs only, generation left to the generator replicas)."""
    from .app import create_app, open_service
    from .models import load_served_models
    from .tracing import setup_tracing

    codecs, generators, rollouts = (list(options.get(k) or ()) for k in _LISTS)
    device = options.get("device", "cpu") if role == "all" else options.get("codec_device", "cpu")
    models = load_served_models(
        codecs, generators if role == "all" else [], rollouts, device,
        backend=options.get("backend", "torch"),
    )  # fmt: skip
    if role == "front":
        models.elsewhere = tuple(spec.partition("=")[0] for spec in generators)
    setup_tracing(options.get("otel_exporter", "none"))
    app = create_app(_service_settings(options, role), models)
    open_service(app.state.service)
    return app


def start_generation(options: dict[str, Any]) -> Any:
    """One generator replica: its generators loaded, published to the queue's catalogue and
    run by a worker on the shared queue; no HTTP. Returns the started :class:`Service`."""
    from .models import load_served_models
    from .service import Service
    from .tracing import setup_tracing

    generators = list(options.get("generators") or ())
    if not generators:
        raise ValueError("generator_replicas: name the generators to run (generators=...)")
    models = load_served_models(
        [], generators, list(options.get("rollouts") or ()), options.get("device", "cpu"),
        load_codecs_too=False,
    )  # fmt: skip
    setup_tracing(options.get("otel_exporter", "none"))
    service = Service(_service_settings(options, "worker"), models)
    service.start()
    return service


def application(args: dict[str, Any]) -> Any:
    """The Ray Serve application (``serve run``/``serve deploy`` builder).

    ``args``: ``replicas`` (default 2), ``num_cpus`` and ``num_gpus`` per HTTP replica,
    ``generator_replicas`` (default 0: generators run in the HTTP replicas),
    ``generator_num_cpus`` and ``generator_num_gpus`` per generator replica, ``codecs``,
    ``generators`` and ``rollouts`` (lists, or comma-separated strings from ``serve run``),
    ``device`` (the generators'), ``codec_device`` (the front's codecs when generators run
    apart), and any :class:`ServeSettings` field (``store``, ``state``, ``max_batch``...).
    """
    from ray import serve

    options = dict(args)
    for key in _LISTS:
        if isinstance(options.get(key), str):
            options[key] = [item for item in options[key].split(",") if item]
    replicas = int(options.pop("replicas", 2))
    generator_replicas = int(options.pop("generator_replicas", 0))
    actor = {"num_cpus": float(options.pop("num_cpus", 1)),
             "num_gpus": float(options.pop("num_gpus", 0))}  # fmt: skip
    generator_actor = {"num_cpus": float(options.pop("generator_num_cpus", 1)),
                       "num_gpus": float(options.pop("generator_num_gpus", 0))}  # fmt: skip
    for key in ("max_batch", "max_queued"):
        if key in options:
            options[key] = int(options[key])
    for key in ("batch_wait_ms", "lease", "cache_ttl", "max_duration", "max_batch_seconds"):
        if key in options:
            options[key] = float(options[key])
    role = "front" if generator_replicas else "all"

    def build() -> Any:
        return build_app(options, role)

    @serve.deployment(name="audiotok", num_replicas=replicas, ray_actor_options=actor)
    @serve.ingress(build)
    class Audiotok:
        """The ingress: every request goes to the replica's FastAPI application."""

        def __init__(self, generators: Any = None) -> None:
            self.generators = generators  # bound so that Serve deploys them with the app

    if not generator_replicas:
        return Audiotok.bind()

    @serve.deployment(
        name="audiotok-generators",
        num_replicas=generator_replicas,
        ray_actor_options=generator_actor,
        health_check_period_s=5,
    )
    class Generators:
        """A generator replica: a worker on the shared queue (no requests come here)."""

        def __init__(self) -> None:
            self.service = start_generation(options)

        def check_health(self) -> None:
            """Serve restarts a replica whose worker thread died."""
            if self.service.worker is None or not self.service.worker.is_alive():
                raise RuntimeError("the generation worker is not running")

        def __del__(self) -> None:
            self.service.stop()

    return Audiotok.bind(Generators.bind())
