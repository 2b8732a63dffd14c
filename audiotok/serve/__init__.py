"""``audiotok serve``: compression and generation as a long-running HTTP service.

``app`` builds the FastAPI application (routes in ``codec_routes`` and ``job_routes``,
errors in ``errors``); ``service`` holds one running service's settings, state folder,
models and worker; ``jobs`` is the persistent queue (SQLite) with its cache and dedup;
``requests`` the generation request and its keys; ``worker`` runs batches of compatible jobs
in one LM pass; ``models`` loads the codecs and generators once; ``observability`` holds the
metrics, JSON logs and audio monitors, ``tracing`` the OpenTelemetry spans; ``grpc_service``
serves the same operations over gRPC (``audiotok.proto``, stubs in ``grpc_gen``),
``static/`` is the web page at ``/``, and ``ray_app`` runs it all as Ray Serve replicas.
Deployment, settings and metrics: docs/SERVING.md; on Ray: docs/SCALING.md.
"""
