"""The server interceptors on a real gRPC server: error mapping to status + ErrorInfo, request limits, auth policy.

Runs the probe service of ``conftest.py`` through the same bootstrap every Parley service uses.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support.probe import PROBE_ADMIN_TOKEN, PROBE_SERVICE, Probe, ProbeFactory

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime.errors import ERROR_DOMAIN, Code, ParleyError, reason_name, reason_value


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


async def _fail(probe: Probe, kind: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await probe.unary("Fail")(kind)
    return error.value


def test_every_reason_round_trips_through_its_errorinfo_name() -> None:
    for value in ErrorReason.values():
        name = reason_name(value)
        assert not name.startswith("ERROR_REASON_")
        assert reason_value(name) == value
    with pytest.raises(ValueError, match="NO_SUCH"):
        reason_value("NO_SUCH")


async def test_parley_error_becomes_status_and_errorinfo(start_probe: ProbeFactory) -> None:
    probe = await start_probe()
    error = await _fail(probe, b"parley")
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no device 7")
    info = _error_info(error)
    assert (info.domain, info.reason) == (ERROR_DOMAIN, "DEVICE_NOT_FOUND")
    assert dict(info.metadata) == {"device_id": "7", "address": "a"}


async def test_redis_failure_becomes_unavailable(start_probe: ProbeFactory) -> None:
    probe = await start_probe()
    error = await _fail(probe, b"redis")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert _error_info(error).reason == "DEPENDENCY_UNAVAILABLE"
    assert "10.0.0.7" not in error.details()


async def test_unexpected_error_becomes_internal_without_details(
    start_probe: ProbeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    probe = await start_probe()
    with caplog.at_level(logging.ERROR, logger="parley_runtime.interceptors"):
        error = await _fail(probe, b"bug")
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert _error_info(error).reason == "INTERNAL"
    # The operator gets the detail in the log, the caller does not.
    logged = [record for record in caplog.records if record.exc_info]
    assert logged
    assert "secret internal detail" in str(logged[0].exc_info[1])


async def test_streaming_error_after_a_message_is_mapped(start_probe: ProbeFactory) -> None:
    probe = await start_probe()
    stream = probe.stream("StreamThenFail")(b"parley")
    assert await stream.read() == b"one"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stream.read()
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert _error_info(error.value).reason == "DEVICE_NOT_FOUND"


def _rpc_counts(metric_reader: InMemoryMetricReader) -> dict[tuple[str, int], int]:
    """Calls of the probe recorded in ``rpc.server.duration``, by (method, status code); cumulative."""
    data = metric_reader.get_metrics_data()
    counts: dict[tuple[str, int], int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "rpc.server.duration":
                    continue
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if attributes["rpc.service"] == PROBE_SERVICE:
                        key = (str(attributes["rpc.method"]), int(attributes["rpc.grpc.status_code"]))
                        counts[key] = point.count
    return counts


async def test_rpc_metrics_record_method_and_status(
    start_probe: ProbeFactory, metric_reader: InMemoryMetricReader
) -> None:
    probe = await start_probe()
    before = _rpc_counts(metric_reader)
    await probe.unary("Echo")(b"x")
    await _fail(probe, b"parley")
    await _fail(probe, b"parley")
    after = _rpc_counts(metric_reader)
    ok, not_found = grpc.StatusCode.OK.value[0], grpc.StatusCode.NOT_FOUND.value[0]
    assert after.get(("Echo", ok), 0) - before.get(("Echo", ok), 0) == 1
    assert after.get(("Fail", not_found), 0) - before.get(("Fail", not_found), 0) == 2


def _active(metric_reader: InMemoryMetricReader, method: str) -> int:
    """``rpc.server.active_requests`` of a probe method now."""
    data = metric_reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "rpc.server.active_requests":
                    continue
                for point in metric.data.data_points:
                    if dict(point.attributes or {}).get("rpc.method") == f"/{PROBE_SERVICE}/{method}":
                        return int(point.value)
    return 0


async def test_active_requests_count_calls_in_progress_and_fall_back_when_they_end(
    start_probe: ProbeFactory, metric_reader: InMemoryMetricReader
) -> None:
    probe = await start_probe()
    before = _active(metric_reader, "Block")
    blocked = probe.unary("Block")(b"")
    # Counted before the handler runs, so once it has entered the call is in the figure.
    await asyncio.wait_for(probe.entered.wait(), 10)
    assert _active(metric_reader, "Block") == before + 1
    probe.release.set()
    assert await blocked == b"done"
    assert _active(metric_reader, "Block") == before
    await _fail(probe, b"parley")
    assert _active(metric_reader, "Fail") == 0


async def test_calls_beyond_max_inflight_are_refused_as_overloaded(start_probe: ProbeFactory) -> None:
    probe = await start_probe(max_inflight_calls=1)
    blocked = probe.unary("Block")(b"")  # a grpc.aio call starts when created
    # The one slot is held until the test releases it, so what follows does not depend on timing.
    await asyncio.wait_for(probe.entered.wait(), 10)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await probe.unary("Echo")(b"x")
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = _error_info(error.value)
    assert (info.reason, dict(info.metadata)) == ("OVERLOADED", {"limit": "1"})

    # Health probes still answer: an overloaded replica is busy, not broken.
    health = health_pb2_grpc.HealthStub(probe.channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(service=PROBE_SERVICE))
    assert checked.status == health_pb2.HealthCheckResponse.SERVING

    probe.release.set()
    assert await blocked == b"done"
    # The slot is free again once the blocked call finished.
    assert await probe.unary("Echo")(b"y") == b"y"


async def test_refused_calls_do_not_leak_slots(start_probe: ProbeFactory) -> None:
    probe = await start_probe(max_inflight_calls=1)
    for _ in range(3):
        await _fail(probe, b"parley")
    with pytest.raises(grpc.aio.AioRpcError):
        await probe.unary("Guarded")(b"x")
    assert await probe.unary("Echo")(b"ok") == b"ok"


async def test_policy_is_enforced_and_unlisted_methods_are_refused(start_probe: ProbeFactory) -> None:
    probe = await start_probe()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await probe.unary("Guarded")(b"x")
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(missing.value).reason == "TOKEN_MISSING"
    admin = (("authorization", f"Bearer {PROBE_ADMIN_TOKEN}"),)
    assert await probe.unary("Guarded")(b"x", metadata=admin) == b"x"
    # A method the service forgot to declare is closed, whatever the credential.
    with pytest.raises(grpc.aio.AioRpcError) as unlisted:
        await probe.unary("Unlisted")(b"x", metadata=admin)
    assert unlisted.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_parley_error_stringifies_metadata() -> None:
    error = ParleyError(Code.NOT_FOUND, ErrorReason.ERROR_REASON_NOT_FOUND, "gone", count=3)
    assert error.metadata == {"count": "3"}
    assert error.reason_name == "NOT_FOUND"
    # Parley's codes are gRPC's numeric codes, so the mapping needs no table.
    assert all(code.value == getattr(grpc.StatusCode, code.name).value[0] for code in Code)
