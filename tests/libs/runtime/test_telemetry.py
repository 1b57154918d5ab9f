"""Traces and metrics: Redis commands get spans and a duration histogram, and spans link up across gRPC hops."""

from __future__ import annotations

import asyncio
import time

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.cluster import INTERNAL_TOKEN, Cluster

from parley.identity.v1 import identity_pb2 as pb
from parley.identity.v1 import identity_pb2_grpc
from parley_runtime.clients import internal_channel
from parley_runtime.redis_client import connect
from parley_runtime.telemetry import Telemetry


def _redis_operation_counts(metric_reader: InMemoryMetricReader) -> dict[str, int]:
    data = metric_reader.get_metrics_data()
    counts: dict[str, int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "db.client.operation.duration":
                    assert metric.unit == "s"
                    for point in metric.data.data_points:
                        name = str((point.attributes or {})["db.operation.name"])
                        counts[name] = point.count
    return counts


async def _finished_span(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    # A server span ends as its handler returns, which can be a moment after the client saw the response.
    deadline = time.monotonic() + 5
    while True:
        for span in spans.get_finished_spans():
            if span.name == name:
                return span
        assert time.monotonic() < deadline, f"no span {name!r}"
        await asyncio.sleep(0.01)


async def test_redis_commands_get_spans_and_a_duration_metric(
    redis_url: str, spans: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    before = _redis_operation_counts(metric_reader).get("ECHO", 0)
    client = connect(redis_url)
    try:
        for _ in range(3):
            await client.echo("hello")
    finally:
        await client.aclose()
    echoes = [span for span in spans.get_finished_spans() if span.name == "ECHO"]
    assert len(echoes) == 3
    assert all(span.kind is SpanKind.CLIENT and (span.attributes or {})["db.system"] == "redis" for span in echoes)
    assert _redis_operation_counts(metric_reader).get("ECHO", 0) - before == 3


async def test_redis_spans_are_children_of_the_rpc(cluster: Cluster, spans: InMemorySpanExporter) -> None:
    await cluster.start_identity()
    keys = await cluster.enlist("birdy")
    spans.clear()
    await cluster.identity().RegisterUser(pb.RegisterUserRequest(), metadata=keys.auth("username:ann@birdy"))
    server = await _finished_span(spans, "/parley.identity.v1.IdentityService/RegisterUser")
    in_rpc = [
        span
        for span in spans.get_finished_spans()
        if (span.attributes or {}).get("db.system") == "redis" and span.context.trace_id == server.context.trace_id
    ]
    # The replay guard's SET and the user-creating script ran inside the RPC's span (background work such as the
    # provider directory's refresh has traces of its own).
    assert {"SET", "EVALSHA"} <= {span.name for span in in_rpc}
    for span in in_rpc:
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id


async def test_trace_context_crosses_a_service_hop(
    cluster: Cluster, spans: InMemorySpanExporter, telemetry: Telemetry
) -> None:
    await cluster.start_identity()
    channel = internal_channel(cluster.target("identity"), internal_token=INTERNAL_TOKEN, telemetry=telemetry)
    try:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        with telemetry.tracer("tests").start_as_current_span("relay-handling-a-stanza") as caller:
            await stub.ResolveRecipient(
                pb.ResolveRecipientRequest(sender="username:a@birdy", recipient="username:b@gatekeeper")
            )
    finally:
        await channel.close()
    server = await _finished_span(spans, "/parley.identity.v1.IdentityService/ResolveRecipient")
    client = next(
        span for span in spans.get_finished_spans() if span.kind is SpanKind.CLIENT and span.name == server.name
    )
    assert server.kind is SpanKind.SERVER
    assert server.context.trace_id == caller.get_span_context().trace_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert client.parent is not None
    assert client.parent.span_id == caller.get_span_context().span_id
