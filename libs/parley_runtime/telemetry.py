"""OpenTelemetry set-up shared by every Parley process: traces, metrics, and their exporters.

Exporters are chosen by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``,
default ``none`` so a laptop without a collector stays quiet) and ``OTEL_METRICS_EXPORTER`` (``prometheus``,
``otlp``, ``console`` or ``none``); ``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_TRACES_SAMPLER``
and ``OTEL_PROPAGATORS`` are read by the SDK itself. W3C trace context crosses every gRPC hop, so one trace shows
a request's path through all services.

gRPC calls get spans from the grpc instrumentation and RPC metrics from :mod:`parley_runtime.interceptors`;
Redis commands get spans from the redis instrumentation, and their duration histogram is derived from those spans
here (the instrumentation has no metrics of its own), so Redis metrics follow the trace sampler.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind

_log = logging.getLogger(__name__)

# Histogram bucket boundaries. The SDK's default (0, 5, 10, 25, ... 10000) suits milliseconds of a web request, not
# a Redis command in seconds (every one lands in the first bucket) nor a webhook retried for an hour. Each duration
# histogram names the boundaries that fit its unit and range, after the OpenTelemetry semantic conventions'
# recommendations, extended downwards where Parley's operations are faster than they assume.

REDIS_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""``db.client.operation.duration`` (s): 100 µs (a local command) to 10 s (far past the command deadline)."""

RPC_MILLISECONDS_BUCKETS = (
    0.25, 0.5, 1, 2.5, 5, 7.5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 60000, 600000,
)  # fmt: skip
"""``rpc.server.duration`` (ms): a cached unary call to a stream that stayed open ten minutes."""

DELIVERY_MILLISECONDS_BUCKETS = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000, 3600000,
)  # fmt: skip
"""Deliveries (ms): from a message to its acknowledgement, or an event to a provider's acceptance, retries
included (up to an hour)."""


@dataclass(frozen=True)
class Telemetry:
    """The process's tracer and meter providers."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def tracer(self, name: str) -> trace.Tracer:
        """A tracer for instrumentation scope ``name``."""
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        """A meter for instrumentation scope ``name``."""
        return self.meter_provider.get_meter(name)


class _RedisSpanMetrics(SpanProcessor):
    """Records ``db.client.operation.duration`` for every finished Redis client span."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._histogram = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of Redis commands",
            explicit_bucket_boundaries_advisory=REDIS_SECONDS_BUCKETS,
        )

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        if span.kind is not SpanKind.CLIENT or attributes.get("db.system") != "redis":
            return
        if span.start_time is None or span.end_time is None:
            return
        self._histogram.record(
            (span.end_time - span.start_time) / 1e9,
            {"db.system": "redis", "db.operation.name": span.name.split(" ", 1)[0]},
        )


_telemetry: Telemetry | None = None


def configure_telemetry(
    service_name: str,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    metrics_port: int = 0,
) -> Telemetry:
    """Sets up tracing and metrics for this process once; later calls return the first set-up.

    OpenTelemetry's global providers can be set only once per process, and tests run several services in one
    process, so the first caller's configuration wins.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` is set.
        span_exporters: extra exporters (tests pass an in-memory one), exported synchronously.
        metric_readers: extra metric readers (tests pass an in-memory one).
        metrics_port: port for the Prometheus endpoint when ``OTEL_METRICS_EXPORTER=prometheus``.

    Returns:
        The process's telemetry.
    """
    global _telemetry  # noqa: PLW0603 -- one OpenTelemetry set-up per process is the SDK's own model
    if _telemetry is not None:
        return _telemetry
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})

    readers = list(metric_readers) + _metric_readers_from_env(metrics_port)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    tracer_provider = TracerProvider(resource=resource)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    for exporter in _span_exporters_from_env():
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer_provider.add_span_processor(_RedisSpanMetrics(meter_provider.get_meter("parley.redis")))

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    RedisInstrumentor().instrument(tracer_provider=tracer_provider)
    _telemetry = Telemetry(tracer_provider, meter_provider)
    return _telemetry


def _span_exporters_from_env() -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in _names("OTEL_TRACES_EXPORTER"):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415 -- optional
                OTLPSpanExporter,
            )

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            _log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return exporters


def _metric_readers_from_env(metrics_port: int) -> list[MetricReader]:
    readers: list[MetricReader] = []
    for name in _names("OTEL_METRICS_EXPORTER"):
        if name == "prometheus":
            from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415 -- optional
            from prometheus_client import start_http_server  # noqa: PLC0415 -- optional

            readers.append(PrometheusMetricReader())
            if metrics_port:
                start_http_server(metrics_port)
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415 -- optional
                OTLPMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        else:
            _log.warning("unknown OTEL_METRICS_EXPORTER %r ignored", name)
    return readers


def _names(variable: str) -> list[str]:
    raw = os.environ.get(variable, "none")
    return [part.strip() for part in raw.split(",") if part.strip() and part.strip() != "none"]
