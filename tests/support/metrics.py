"""Reading the in-memory metric reader in tests."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

Points = dict[tuple[tuple[str, str], ...], float]
"""Metric values by their sorted (attribute, value) pairs."""


def sums(reader: InMemoryMetricReader, name: str) -> Points:
    """The current value of each data point of metric ``name``, by its sorted (attribute, value) pairs."""
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
                    values[key] = values.get(key, 0) + point.value
    return values
