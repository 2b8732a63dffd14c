"""OpenTelemetry spans per request and per job, off unless an exporter is chosen.

``audiotok serve --otel-exporter console`` prints finished spans as JSON on stdout;
``otlp`` sends them to the collector the standard ``OTEL_EXPORTER_OTLP_*`` variables name
(it needs ``opentelemetry-exporter-otlp``). Off, :func:`span` costs nothing and no
OpenTelemetry package is imported. Spans: ``http <METHOD> <route>`` per request (status, request
id) and ``generate batch`` per batch, with one ``job`` child per job (id, model, queue wait).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import AudiotokError

_tracer: Any = None


def setup_tracing(exporter: str, service_name: str = "audiotok") -> None:
    """Turns spans on with ``exporter`` (``console`` or ``otlp``); ``none`` leaves them off."""
    global _tracer
    if exporter == "none":
        _tracer = None
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        raise AudiotokError(
            "--otel-exporter needs OpenTelemetry: pip install opentelemetry-sdk"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "console":
        # One span per line as soon as it ends: a log shipper reads them like the JSON logs.
        provider.add_span_processor(
            SimpleSpanProcessor(
                ConsoleSpanExporter(formatter=lambda s: s.to_json(indent=None) + "\n")
            )
        )
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise AudiotokError(
                "--otel-exporter otlp needs pip install opentelemetry-exporter-otlp"
            ) from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("audiotok.serve")


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``name`` (the current one's child), or nothing when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)
        yield current
