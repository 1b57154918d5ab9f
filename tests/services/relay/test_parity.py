"""Parity between the gatekeeper's own traffic and third parties': per-provider metrics and the admin's report,
checked by value against what the test sent and acknowledged."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support.cluster import ADMIN, Cluster
from support.relay import World, raw_message, start_world, text
from support.telemetry import sums

from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_sdk import DeviceClient, RelayConnection, error_reason
from parley_stanza import Message


async def _drain(device: DeviceClient, connection: RelayConnection, messages: int, acked: Counter[str]) -> int:
    """Receives and acknowledges until ``messages`` messages arrived; counts every acknowledged copy."""
    received = 0
    while received < messages:
        async with asyncio.timeout(10):
            incoming = await connection.receive()
        if isinstance(incoming.stanza, Message):
            device.decrypt(incoming.stanza)
            received += 1
        await connection.ack(incoming.delivery_id)
        acked[device.address.provider] += 1
    return received


async def _report(relay: relay_pb2_grpc.RelayServiceStub, from_ms: int) -> dict[str, pb.ProviderParity]:
    response = await relay.GetParityReport(
        pb.GetParityReportRequest(from_ms=from_ms, to_ms=int(time.time() * 1000) + 1), metadata=ADMIN
    )
    return {entry.provider_id: entry for entry in response.providers}


async def _conversation(world: World) -> tuple[Counter[str], Counter[str]]:
    """Ana (gatekeeper) writes 5 messages to Ben (birdy), Ben 3 back, and Ben sends one spoofed stanza."""
    ana, ben = world["ana_phone"], world["ben"]
    acked: Counter[str] = Counter()
    async with ana.connect() as ana_stream, ben.connect() as ben_stream:
        for index in range(5):
            await ana.send_content(ben.user, text(f"to ben {index}"))
        for index in range(3):
            await ben.send_content(ana.user, text(f"to ana {index}"))
        spoofed = raw_message(world["cleo_phone"].address, ana.user, [ana.address], "spoofed")
        with pytest.raises(grpc.aio.AioRpcError):
            await world["ben"].send(spoofed)
        assert await _drain(ben, ben_stream, 5, acked) == 5
        assert await _drain(ana, ana_stream, 3, acked) == 3
    return Counter({"gatekeeper": 5, "birdy": 3}), acked


async def test_the_parity_report_counts_each_provider_by_value(cluster: Cluster) -> None:
    started_ms = int(time.time() * 1000)
    world = await start_world(cluster, native_provider="gatekeeper")
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    accepted, acked = await _conversation(world)
    # Counts reach Redis within a second of the traffic.
    async with asyncio.timeout(10):
        while (report := await _report(relay, started_ms))["gatekeeper"].delivered < acked["gatekeeper"]:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert list(report) == ["gatekeeper", "birdy"]  # the native provider first
    gatekeeper, birdy = report["gatekeeper"], report["birdy"]
    assert (gatekeeper.native, birdy.native) == (True, False)
    # Accepted counts every stanza the provider's users sent: messages, and the receipts their SDKs sent back.
    assert gatekeeper.accepted >= accepted["gatekeeper"]
    assert birdy.accepted >= accepted["birdy"]
    assert dict(gatekeeper.refused) == {}
    assert dict(birdy.refused) == {"SPOOFED_SENDER": 1}
    assert birdy.refusal_ratio == pytest.approx(1 / (birdy.accepted + 1))
    assert (gatekeeper.delivered, birdy.delivered) == (acked["gatekeeper"], acked["birdy"])
    for entry in (gatekeeper, birdy):
        assert 0 <= entry.delivery_latency_p50_ms <= entry.delivery_latency_p95_ms <= entry.delivery_latency_p99_ms
        assert 0 < entry.delivery_latency_mean_ms < 60_000
    await world.close()


async def test_deliveries_are_measured_per_provider_pair(cluster: Cluster, metric_reader: InMemoryMetricReader) -> None:
    world = await start_world(cluster)
    before = sums(metric_reader, "relay.delivered"), sums(metric_reader, "relay.delivery.latency")
    _, acked = await _conversation(world)
    delivered = sums(metric_reader, "relay.delivered")
    latency = sums(metric_reader, "relay.delivery.latency")
    pair = (("parley.provider", "birdy"), ("parley.sender_provider", "gatekeeper"))
    back = (("parley.provider", "gatekeeper"), ("parley.sender_provider", "birdy"))
    assert delivered[pair] - before[0].get(pair, 0) == acked["birdy"]
    assert delivered[back] - before[0].get(back, 0) == acked["gatekeeper"]
    assert latency[pair] - before[1].get(pair, 0) == acked["birdy"]  # a histogram's count: one per copy
    await world.close()


@pytest.mark.parametrize(
    ("window", "field"),
    [((0, 1), "from_ms"), ((2_000, 1_000), "to_ms"), ((1_000, 1_000 + 30 * 86_400_000), "to_ms")],
)
async def test_a_bad_window_is_refused(cluster: Cluster, window: tuple[int, int], field: str) -> None:
    world = await start_world(cluster)
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await relay.GetParityReport(pb.GetParityReportRequest(from_ms=window[0], to_ms=window[1]), metadata=ADMIN)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == ("INVALID_FIELD", {"field": field})
    await world.close()


async def test_only_the_admin_reads_the_report(cluster: Cluster) -> None:
    world = await start_world(cluster)
    relay = relay_pb2_grpc.RelayServiceStub(cluster.channel("relay"))
    ben = world["ben"]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await relay.GetParityReport(
            pb.GetParityReportRequest(from_ms=1, to_ms=2),
            metadata=ben.backend.credentials(str(ben.user), ben.device_id),
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await world.close()
