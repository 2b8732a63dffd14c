"""The service's request log lines and metrics, in process: every answer is logged and counted
under its route's template, the 500s and the refusals before routing too."""

from __future__ import annotations

import logging
import sqlite3

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def test_every_answer_is_logged_and_counted_under_its_route(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from audiotok.serve.app import create_app
    from audiotok.serve.models import ServedModels
    from audiotok.serve.service import ServeSettings

    settings = ServeSettings(state=tmp_path / "state", api_key="k")
    app = create_app(settings, ServedModels(codecs={}, generators={}))
    records = []
    with TestClient(app, raise_server_exceptions=False) as client:
        service = app.state.service
        service.logger.addHandler(handler := logging.Handler())
        handler.emit = records.append
        key = {"Authorization": "Bearer k"}
        assert client.get("/docs").status_code == 200
        assert client.get("/v1/jobs/abc").status_code == 401  # refused before routing

        def locked(job_id):
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(service.store, "get", locked)
        broken = client.get("/v1/jobs/abc", headers={**key, "X-Request-ID": "r-500"})
        assert broken.status_code == 500
        assert broken.json()["error"]["code"] == "internal"
        assert broken.headers["X-Request-ID"] == "r-500"
        metrics = client.get("/metrics").text
    requests = [r.fields for r in records if r.getMessage() == "request"]
    assert [(r["route"], r["status"]) for r in requests] == [
        ("/docs", 200),
        ("/v1/jobs/{job_id}", 401),
        ("/v1/jobs/{job_id}", 500),
        ("/metrics", 200),
    ]
    assert requests[2]["request_id"] == "r-500"
    assert any(
        r.getMessage() == "internal error" and r.fields["request_id"] == "r-500" for r in records
    )
    for route, status in (("/docs", 200), ("/v1/jobs/{job_id}", 401), ("/v1/jobs/{job_id}", 500)):
        sample = f'audiotok_request_seconds_count{{route="{route}",status="{status}"}} 1.0'
        assert sample in metrics, sample
    assert 'audiotok_errors_total{kind="http_500"} 1.0' in metrics
    assert 'route="unmatched"' not in metrics
