"""Tracing is off by default and chosen by the standard OTEL_* variables."""

import pytest
from temporalio.contrib.opentelemetry import TracingInterceptor

from worker.telemetry import tracing_interceptors


def test_off_unless_asked(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing_interceptors() == []


def test_console_exporter_gives_the_temporal_tracing_interceptor(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert [type(i) for i in tracing_interceptors()] == [TracingInterceptor]


def test_unknown_exporter_is_named(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='zipkin'.*console, otlp or none"):
        tracing_interceptors()
