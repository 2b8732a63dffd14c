"""``audiotok serve`` as a Ray Serve application: the same app, in replicas across a cluster.

Each replica builds the very application ``audiotok serve`` runs (:func:`create_app`: same
routes, errors, metrics, cache, dedup, deadlines), with its own models and generation worker,
on one **shared** state folder: the replicas share the SQLite queue and the results, any
replica answers any job, and a job whose replica dies is taken over by another when its lease
(``lease`` seconds) runs out. The folder must be on one machine's disk or a file system with
working POSIX locks: SQLite's locking does not hold on NFS.

Run it from the command line, ``audiotok serve --ray --replicas 2 ...``, or from Ray's own
tools with an import path and the options as arguments::

    serve run audiotok.serve.ray_app:application state=/srv/audiotok replicas=2 \\
        generators=musicgen-small device=cuda

Metrics are per replica (``/metrics`` answers from the replica that took the request); Ray's
own metrics export gathers replicas' figures on a cluster.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from .service import ServeSettings

_LISTS = ("codecs", "generators", "rollouts")


def build_app(options: dict[str, Any]) -> Any:
    """One replica's FastAPI application, its service started on the shared state folder."""
    from .app import create_app, open_service
    from .models import load_served_models
    from .tracing import setup_tracing

    models = load_served_models(*(list(options.get(k) or ()) for k in _LISTS),
                                device=options.get("device", "cpu"))  # fmt: skip
    setup_tracing(options.get("otel_exporter", "none"))
    known = {f.name for f in fields(ServeSettings)}
    settings = ServeSettings(**{k: v for k, v in options.items() if k in known}, shared=True)
    settings.state = Path(settings.state)
    app = create_app(settings, models)
    open_service(app.state.service)
    return app


def application(args: dict[str, Any]) -> Any:
    """The Ray Serve application (``serve run``/``serve deploy`` builder).

    ``args``: ``replicas`` (default 2), ``num_cpus`` and ``num_gpus`` per replica, ``codecs``,
    ``generators`` and ``rollouts`` (lists, or comma-separated strings from ``serve run``),
    ``device``, and any :class:`ServeSettings` field (``state``, ``max_batch``, ``lease``...).
    """
    from ray import serve

    options = dict(args)
    for key in _LISTS:
        if isinstance(options.get(key), str):
            options[key] = [item for item in options[key].split(",") if item]
    replicas = int(options.pop("replicas", 2))
    actor = {"num_cpus": float(options.pop("num_cpus", 1)),
             "num_gpus": float(options.pop("num_gpus", 0))}  # fmt: skip
    for key in ("max_batch", "max_queued"):
        if key in options:
            options[key] = int(options[key])
    for key in ("batch_wait_ms", "lease", "cache_ttl", "max_duration", "max_batch_seconds"):
        if key in options:
            options[key] = float(options[key])

    def build() -> Any:
        return build_app(options)

    @serve.deployment(name="audiotok", num_replicas=replicas, ray_actor_options=actor)
    @serve.ingress(build)
    class Audiotok:
        """The ingress: every request goes to the replica's FastAPI application."""

    return Audiotok.bind()
