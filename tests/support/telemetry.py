"""Reading the in-memory metric reader and span exporter in tests."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

Points = dict[tuple[tuple[str, str], ...], float]
"""Metric values by their sorted (attribute, value) pairs."""


def sums(reader: InMemoryMetricReader, name: str) -> Points:
    """The current value of each data point of metric ``name`` (a histogram's: its count), by its sorted
    (attribute, value) pairs."""
    values: Points = {}
    data = reader.get_metrics_data()
    if data is None:
        return values
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    key = tuple(sorted((k, str(v)) for k, v in (point.attributes or {}).items()))
                    value = point.count if isinstance(point, HistogramDataPoint) else point.value
                    values[key] = values.get(key, 0) + value
    return values


def redis_spans_of(spans: InMemorySpanExporter, rpc: str) -> list[ReadableSpan]:
    """The Redis client spans in the trace of the finished server span of ``rpc`` (e.g. ``"/CheckSend"``)."""
    finished = spans.get_finished_spans()
    server = next(s for s in finished if s.kind is SpanKind.SERVER and s.name.endswith(rpc))
    return [
        s
        for s in finished
        if s.context.trace_id == server.context.trace_id and (s.attributes or {}).get("db.system") == "redis"
    ]
