"""What the service tells its operators: Prometheus metrics, JSON log lines, audio monitors.

Metrics live in a registry of the service's own (two services in one process, as in the
tests, don't mix their counts); ``GET /metrics`` serves it in Prometheus' text format. Log
lines are single JSON objects on stderr, one per request and one per job, so that any log
shipper can index them. The quality monitors are cheap statistics of every generated clip,
whose drift shows a broken model or deployment before users report it.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_UNIT = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


class Metrics:
    """The service's Prometheus metrics (names start with ``audiotok_``)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.request_seconds = Histogram(
            "audiotok_request_seconds",
            "HTTP request latency",
            ["route", "status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "audiotok_queue_wait_seconds",
            "Time a job waited before it ran",
            buckets=_SECONDS,
            registry=r,
        )
        self.run_seconds = Histogram(
            "audiotok_job_run_seconds", "Time a batch of jobs ran", buckets=_SECONDS, registry=r
        )
        self.batch_size = Histogram(
            "audiotok_batch_size",
            "Jobs per batched LM pass",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=r,
        )
        self.queue_depth = Gauge("audiotok_queue_depth", "Jobs per status", ["status"], registry=r)
        self.cache_hits = Counter(
            "audiotok_cache_hits_total", "Requests answered from the cache", registry=r
        )
        self.dedup_joins = Counter(
            "audiotok_dedup_joins_total",
            "Requests that joined an identical job in flight",
            registry=r,
        )
        self.timeouts = Counter(
            "audiotok_timeouts_total", "Jobs stopped at their deadline", registry=r
        )
        self.errors = Counter(
            "audiotok_errors_total", "Failed requests and jobs", ["kind"], registry=r
        )
        self.generated_seconds = Counter(
            "audiotok_generated_audio_seconds_total", "Seconds of audio generated", registry=r
        )
        self.quality = {
            name: Histogram(f"audiotok_generated_{name}", help_, buckets=buckets, registry=r)
            for name, help_, buckets in (
                ("spectral_flatness", "Mean spectral flatness of generated clips", _UNIT),
                ("rms_dbfs", "RMS level of generated clips (dBFS)", tuple(range(-90, 1, 10))),
                ("peak_dbfs", "Peak level of generated clips (dBFS)", tuple(range(-60, 1, 6))),
                ("clipped_fraction", "Fraction of samples at full scale", _UNIT),
                ("silent_fraction", "Fraction of 20 ms frames below -60 dBFS", _UNIT),
            )
        }

    def observe_audio(self, audio: np.ndarray, sample_rate: int) -> dict[str, float]:
        """Records the quality monitors of one clip ``[C, T]``; returns them."""
        values = audio_monitors(audio, sample_rate)
        for name, value in values.items():
            self.quality[name].observe(value)
        self.generated_seconds.inc(audio.shape[-1] / sample_rate)
        return values


def audio_monitors(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Spectral flatness, RMS and peak level, clipped and silent fraction of ``[C, T]``.

    Flatness is the geometric over the arithmetic mean of the power spectrum of 2048-sample
    frames (1: white noise, near 0: tones), averaged over frames; a model that only outputs
    noise or silence moves it, and the levels, far from their usual values.
    """
    mono = np.asarray(audio, dtype=np.float64).mean(axis=0)
    floor = 1e-10
    rms = float(np.sqrt(np.mean(mono**2))) if mono.size else 0.0
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    frame = max(1, sample_rate // 50)
    n = mono.size // frame
    frames = mono[: n * frame].reshape(n, frame) if n else mono[None, :]
    frame_rms = np.sqrt(np.mean(frames**2, axis=1))
    size = 2048
    m = mono.size // size
    if m:
        power = np.abs(np.fft.rfft(mono[: m * size].reshape(m, size), axis=1)) ** 2 + floor
        flatness = float(np.mean(np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)))
    else:
        flatness = 0.0
    return {
        "spectral_flatness": flatness,
        "rms_dbfs": 20 * np.log10(max(rms, floor)),
        "peak_dbfs": 20 * np.log10(max(peak, floor)),
        "clipped_fraction": float(np.mean(np.abs(audio) >= 0.999)) if audio.size else 0.0,
        "silent_fraction": float(np.mean(frame_rms < 1e-3)) if frame_rms.size else 1.0,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(line, ensure_ascii=False, default=str)


def json_logger(name: str = "audiotok.serve", level: int = logging.INFO) -> logging.Logger:
    """The service's logger, writing JSON lines to stderr (set up once per process)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    return logger


def log_event(logger: logging.Logger, message: str, **fields: Any) -> None:
    """Logs ``message`` with ``fields`` as keys of its JSON line."""
    logger.info(message, extra={"fields": fields})
