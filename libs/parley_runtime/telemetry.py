"""OpenTelemetry set-up shared by every Parley process: traces, metrics, and their exporters.

Exporters are chosen by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``,
default ``none`` so a laptop without a collector stays quiet) and ``OTEL_METRICS_EXPORTER`` (``prometheus``,
``otlp``, ``console`` or ``none``); ``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_*`` and ``OTEL_PROPAGATORS`` are
read by the SDK itself. W3C trace context crosses every gRPC hop, so one trace shows a request's path through all
services.

Traces are sampled as in production: parent-based, a root trace kept at ``OTEL_TRACES_SAMPLER_ARG`` (default
:data:`DEFAULT_TRACE_SAMPLE_RATIO`, 1 %), so a trace that a caller sampled is complete in every service and one it
did not costs almost nothing anywhere. ``OTEL_TRACES_SAMPLER`` names another of the SDK's samplers
(``always_on`` in tests that read every span, ``parentbased_traceidratio``, ...).

gRPC server calls get spans and RPC metrics from :mod:`parley_runtime.interceptors`, client calls spans from the
grpc instrumentation. Redis commands are instrumented here (:func:`instrument_redis`): every command and pipeline
is timed into ``db.client.operation.duration`` whatever the sampler decided, so the metric stays complete, and gets
a span only inside a sampled trace (or as a sampled root).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
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


DEFAULT_TRACE_SAMPLE_RATIO = 0.01
"""Share of root traces kept when neither ``OTEL_TRACES_SAMPLER`` nor ``OTEL_TRACES_SAMPLER_ARG`` says otherwise."""


def default_sampler() -> Sampler | None:
    """Parley's sampler: parent-based, roots kept at ``OTEL_TRACES_SAMPLER_ARG`` (default 1 %); None when
    ``OTEL_TRACES_SAMPLER`` names a sampler, which the SDK then builds itself.

    Raises:
        ValueError: ``OTEL_TRACES_SAMPLER_ARG`` is not a ratio in [0, 1].
    """
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "")
    ratio = float(raw) if raw.strip() else DEFAULT_TRACE_SAMPLE_RATIO
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio in [0, 1], not {raw!r}")
    return ParentBased(TraceIdRatioBased(ratio))


_telemetry: Telemetry | None = None


def configure_telemetry(
    service_name: str,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    metrics_port: int = 0,
    sampler: Sampler | None = None,
) -> Telemetry:
    """Sets up tracing and metrics for this process once; later calls return the first set-up.

    OpenTelemetry's global providers can be set only once per process, and tests run several services in one
    process, so the first caller's configuration wins.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` is set.
        span_exporters: extra exporters (tests pass an in-memory one), exported synchronously.
        metric_readers: extra metric readers (tests pass an in-memory one).
        metrics_port: port for the Prometheus endpoint when ``OTEL_METRICS_EXPORTER=prometheus``.
        sampler: the trace sampler (tests pass ``ALWAYS_ON``); default :func:`default_sampler`.

    Returns:
        The process's telemetry.
    """
    global _telemetry  # noqa: PLW0603 -- one OpenTelemetry set-up per process is the SDK's own model
    if _telemetry is not None:
        return _telemetry
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})

    readers = list(metric_readers) + _metric_readers_from_env(metrics_port)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    tracer_provider = TracerProvider(resource=resource, sampler=sampler or default_sampler())
    for exporter in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    for exporter in _span_exporters_from_env():
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    instrument_redis(tracer_provider.get_tracer("parley.redis"), meter_provider.get_meter("parley.redis"))
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


class _RedisTiming:
    """Times Redis commands into ``db.client.operation.duration`` and traces them inside sampled traces."""

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self._tracer = tracer
        self._histogram = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of Redis commands",
            explicit_bucket_boundaries_advisory=REDIS_SECONDS_BUCKETS,
        )
        # One attribute set per command name, built once: recording then allocates nothing per command.
        self._attributes: dict[str, dict[str, str]] = {}

    def attributes(self, operation: str) -> dict[str, str]:
        found = self._attributes.get(operation)
        if found is None:
            found = self._attributes[operation] = {"db.system": "redis", "db.operation.name": operation}
        return found

    def record(self, started: float, operation: str) -> None:
        self._histogram.record(time.perf_counter() - started, self.attributes(operation))

    def span(self, name: str, operation: str, extra: dict[str, int]) -> trace.Span | None:
        """A client span for one command or pipeline, or None outside a sampled trace.

        A command inside an unsampled trace gets no span at all (not even a non-recording one): with a parent-based
        sampler it could never be recorded, and most commands run inside unsampled traces.
        """
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            return None
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes={**self.attributes(operation), **extra})
        if not span.is_recording():
            span.end()
            return None
        return span


def _operation(args: tuple[Any, ...]) -> str:
    name = args[0] if args else "redis"
    return name.decode() if isinstance(name, bytes) else str(name)


def _queued_commands(pipeline: Any) -> list[Any]:
    """The argument tuples queued in a single-node or cluster pipeline of redis-py's asyncio client."""
    queue = getattr(pipeline, "command_stack", None)
    if queue is not None:
        return [args for args, _ in queue]
    strategy = getattr(pipeline, "_execution_strategy", None)
    return [command.args for command in getattr(strategy, "_command_queue", ())]


_instrumented = False


def instrument_redis(tracer: trace.Tracer, meter: metrics.Meter) -> None:
    """Wraps redis-py's asyncio clients (single node and cluster, commands and pipelines) once per process.

    Each command costs a clock read and a histogram record; a span is made only where the trace is sampled. The
    wrapping is of the classes, so every client the process makes is covered, the services' own and the tests'.
    """
    global _instrumented  # noqa: PLW0603 -- patching classes is once per process, like the SDK's providers
    if _instrumented:
        return
    _instrumented = True
    from redis.asyncio.client import Pipeline, Redis  # noqa: PLC0415 -- only processes with telemetry
    from redis.asyncio.cluster import ClusterPipeline, RedisCluster  # noqa: PLC0415 -- only processes with telemetry

    timing = _RedisTiming(tracer, meter)
    for cls in (Redis, RedisCluster):
        cls.execute_command = _timed_command(cls.execute_command, timing)  # type: ignore[method-assign]
    Pipeline.immediate_execute_command = _timed_command(  # type: ignore[method-assign]
        Pipeline.immediate_execute_command, timing
    )
    for pipeline_cls in (Pipeline, ClusterPipeline):
        pipeline_cls.execute = _timed_pipeline(pipeline_cls.execute, timing)  # type: ignore[method-assign]


def _timed_command(original: Callable[..., Any], timing: _RedisTiming) -> Callable[..., Any]:
    @functools.wraps(original)
    async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        operation = _operation(args)
        span = timing.span(operation, operation, {"db.redis.args_length": len(args)})
        started = time.perf_counter()
        if span is None:
            try:
                return await original(self, *args, **options)
            finally:
                timing.record(started, operation)
        with trace.use_span(span, end_on_exit=True):
            try:
                return await original(self, *args, **options)
            finally:
                timing.record(started, operation)

    return execute_command


def _timed_pipeline(original: Callable[..., Any], timing: _RedisTiming) -> Callable[..., Any]:
    @functools.wraps(original)
    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        commands = _queued_commands(self)
        # A pipeline is recorded under its first command, as the span named after all of them begins.
        operation = _operation(commands[0]) if commands else "PIPELINE"
        parent = trace.get_current_span().get_span_context()
        span = None
        if not (parent.is_valid and not parent.trace_flags.sampled):
            name = " ".join(_operation(command) for command in commands) or "redis"
            span = timing.span(name, operation, {"db.redis.pipeline_length": len(commands)})
        started = time.perf_counter()
        if span is None:
            try:
                return await original(self, *args, **kwargs)
            finally:
                timing.record(started, operation)
        with trace.use_span(span, end_on_exit=True):
            try:
                return await original(self, *args, **kwargs)
            finally:
                timing.record(started, operation)

    return execute
