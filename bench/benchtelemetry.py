"""Telemetry as the benchmarks run it: off for the main figures, as in production for the telemetry figure.

Production telemetry is the services' defaults (traces sampled parent-based at 1 %, see
``parley_runtime.telemetry``) with both signals exported over OTLP to a collector: here :class:`OtlpSink`, a
do-nothing collector in the bench process that counts what it receives, so the figure shows that telemetry really
went out. Metrics are exported every 5 s, more often than a production collector pulls them (15-60 s), so the
overhead measured is an upper bound.
"""

from __future__ import annotations

from types import TracebackType

import grpc.aio
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

TELEMETRY_OFF = {
    "OTEL_TRACES_SAMPLER": "always_off",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
}
"""A service's environment without telemetry: no trace sampled, no metric exported."""


def production_telemetry(sink_port: int) -> dict[str, str]:
    """A service's environment with production telemetry: the default sampler, OTLP traces and metrics to the
    collector on ``sink_port``."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    }


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.spans += sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.exports = 0

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.aio.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.exports += 1
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpSink:
    """An OTLP/gRPC collector that accepts traces and metrics and counts them: ``async with OtlpSink() as sink``."""

    def __init__(self) -> None:
        self._server = grpc.aio.server()
        self._traces = _Traces()
        self._metrics = _Metrics()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._traces, self._server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self._metrics, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def spans(self) -> int:
        """Spans received so far."""
        return self._traces.spans

    @property
    def metric_exports(self) -> int:
        """Metric export requests received so far."""
        return self._metrics.exports

    async def __aenter__(self) -> OtlpSink:
        await self._server.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # A grace, so that exports still in flight from a stopping service end cleanly instead of being cancelled.
        await self._server.stop(1)
