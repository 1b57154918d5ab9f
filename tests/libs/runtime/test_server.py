"""The server bootstrap: refusing a bad configuration at start, and graceful shutdown on SIGTERM.

The process tests run ``python -m parley_identity`` exactly as a container would, against the test's Redis.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.probe import PROBE_SERVICE, ProbeFactory

from parley_runtime import server
from parley_runtime.testing import free_port

GRACE_S = 5.0


def _service_environment(**variables: str) -> dict[str, str]:
    """The current environment without PARLEY_/OTEL_ variables, plus ``variables``."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("PARLEY_", "OTEL_"))}
    environment.update(variables)
    return environment


def _start_identity(environment: dict[str, str]) -> subprocess.Popen[str]:
    # A fixed interpreter and module; the environment is the only input.
    return subprocess.Popen(
        [sys.executable, "-m", "parley_identity"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_bad_configuration_exits_with_status_2_naming_the_variable() -> None:
    process = _start_identity(
        _service_environment(PARLEY_REDIS_URL="http://127.0.0.1:6379", PARLEY_MAX_DEVICES_PER_USER="none")
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert stderr.startswith("parley-identity: invalid configuration")
    assert "PARLEY_REDIS_URL:" in stderr
    assert "PARLEY_MAX_DEVICES_PER_USER:" in stderr
    assert "Traceback" not in stderr


def test_unreachable_redis_at_start_exits_1_with_one_json_line() -> None:
    process = _start_identity(
        _service_environment(PARLEY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PARLEY_PORT=str(free_port()))
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR"
    assert entry["msg"] == "startup failed"
    assert "ConnectionError" in entry["exc"]


def _wait_serving(target: str, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.poll() is None, f"identity exited with {process.returncode}"
            try:
                response = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "identity never reported SERVING"
            time.sleep(0.05)


def test_sigterm_drains_and_exits_0(redis_url: str) -> None:
    port = free_port()
    process = _start_identity(
        _service_environment(
            PARLEY_PORT=str(port),
            PARLEY_REDIS_URL=redis_url,
            PARLEY_ADMIN_TOKEN="admin",
            PARLEY_SHUTDOWN_GRACE_S=str(GRACE_S),
        )
    )
    try:
        _wait_serving(f"127.0.0.1:{port}", process, timeout=60)
        process.send_signal(signal.SIGTERM)
        # Nothing is in flight, so the drain must end well within the grace period.
        _, stderr = process.communicate(timeout=GRACE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    messages = [json.loads(line)["msg"] for line in stderr.splitlines()]
    assert messages.index("serving") < messages.index("signal received; draining") < messages.index("stopped")


async def test_stop_lets_in_flight_calls_finish_and_refuses_new_ones(start_probe: ProbeFactory) -> None:
    probe = await start_probe()
    health = health_pb2_grpc.HealthStub(probe.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=PROBE_SERVICE))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = probe.unary("Block")(b"")
    await asyncio.wait_for(probe.entered.wait(), 10)

    stopping = asyncio.create_task(probe.server.stop(grace=60))
    # Load balancers are told first...
    assert (await asyncio.wait_for(watch.read(), 10)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    # ...then new calls are refused while the in-flight one is still running.
    deadline = time.monotonic() + 10
    refused: grpc.aio.AioRpcError | None = None
    while refused is None:
        assert time.monotonic() < deadline, "the stopping server still accepted new calls"
        try:
            await probe.unary("Echo")(b"x", timeout=1)
        except grpc.aio.AioRpcError as error:
            refused = error
        else:
            await asyncio.sleep(0.01)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert not stopping.done()

    probe.release.set()
    assert await in_flight == b"done"
    await asyncio.wait_for(stopping, 10)


def test_serving_freezes_start_up_objects_and_collects_the_young_generation_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        server._settle_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (server.GC_FIRST_GENERATION_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
