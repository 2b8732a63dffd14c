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

import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from .service import ServeSettings

_LISTS = ("codecs", "generators", "rollouts")
# The application's own options, beside ServeSettings' fields, with their types.
_APP_OPTIONS: dict[str, Any] = {
    "replicas": int, "generator_replicas": int, "num_cpus": float, "num_gpus": float,
    "generator_num_cpus": float, "generator_num_gpus": float, "device": str,
    "codec_device": str, "backend": str, "otel_exporter": str,
}  # fmt: skip


def typed_options(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with every value of its option's type: ``serve run`` gives strings (``lease=2``,
    ``grpc_port=none``), and a string where a number belongs failed only at the first request.

    Raises:
        ValueError: An unknown option (a typo would otherwise be dropped), or a value its
            type can't take; one line naming the option.
    """
    types_of = {**typing.get_type_hints(ServeSettings), **_APP_OPTIONS}
    out = dict(args)
    for key, value in args.items():
        if key in _LISTS:
            if isinstance(value, str):
                out[key] = [item for item in value.split(",") if item]
            continue
        if key not in types_of:
            known = ", ".join(sorted([*types_of, *_LISTS]))
            raise ValueError(f"unknown option {key!r}; the options are: {known}")
        out[key] = _typed(key, value, types_of[key])
    return out


def _typed(key: str, value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (``int``, ``float``, ``bool``, ``str``, ``Path``, or one of them
    or None); strings are parsed, other values checked."""
    options = (
        typing.get_args(kind)
        if typing.get_origin(kind) in (typing.Union, types.UnionType)
        else (kind,)
    )
    if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
        if type(None) in options:
            return None
        raise ValueError(f"option {key}: a value is needed")
    kind = next(k for k in options if k is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if str(value).lower() in words:
            return words[str(value).lower()]
        raise ValueError(f"option {key}: true or false, not {value!r}")
    try:
        typed = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {key}: {kind.__name__}, not {value!r}") from None
    if kind is int and isinstance(value, float) and typed != value:
        raise ValueError(f"option {key}: a whole number, not {value!r}")  # int(2.5) cut
    return typed


def _service_settings(options: dict[str, Any], role: str) -> ServeSettings:
    known = {f.name for f in fields(ServeSettings)}
    settings = ServeSettings(
        # Replicas always share the queue, and each deployment sets its own role.
        **{k: v for k, v in options.items() if k in known and k not in ("role", "shared")},
        shared=True,
        role=role,
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

    options = typed_options(args)
    replicas = options.pop("replicas", 2)
    generator_replicas = options.pop("generator_replicas", 0)
    actor = {"num_cpus": options.pop("num_cpus", 1.0),
             "num_gpus": options.pop("num_gpus", 0.0)}  # fmt: skip
    generator_actor = {"num_cpus": options.pop("generator_num_cpus", 1.0),
                       "num_gpus": options.pop("generator_num_gpus", 0.0)}  # fmt: skip
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
