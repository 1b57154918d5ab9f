"""Fixtures shared by every test: telemetry captured in memory, real Redis processes, a local cluster, and the
real libsignal under Node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from libs.crypto.libsignal_peer import LibsignalPeer, missing_node_reason, running_peer
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from support.cluster import Cluster

from parley_runtime.telemetry import Telemetry, configure_telemetry
from parley_runtime.testing import RedisClusterServers, RedisServer

_SPANS = InMemorySpanExporter()
_METRICS = InMemoryMetricReader()


@pytest.fixture(scope="session")
def telemetry() -> Telemetry:
    """The process's telemetry, exporting to memory (one set-up per process, as in production)."""
    return configure_telemetry("parley-tests", span_exporters=[_SPANS], metric_readers=[_METRICS], sampler=ALWAYS_ON)


@pytest.fixture
def spans(telemetry: Telemetry) -> Iterator[InMemorySpanExporter]:
    """Finished spans of the current test."""
    _SPANS.clear()
    yield _SPANS
    _SPANS.clear()


@pytest.fixture
def metric_reader(telemetry: Telemetry) -> InMemoryMetricReader:
    """Reads the process's metrics."""
    return _METRICS


@pytest.fixture(scope="session")
def libsignal_peer() -> Iterator[LibsignalPeer]:
    """The real libsignal under Node (``libs/crypto/libsignal/peer.js``), one process shared by the crypto and SDK
    interop tests; a skip naming what is missing."""
    reason = missing_node_reason()
    if reason is not None:
        pytest.skip(reason)
    with running_peer() as peer:
        yield peer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, shared by one test module."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster_servers() -> Iterator[RedisClusterServers]:
    """A real Redis Cluster (3 masters, a replica each) on free ports, shared by one test module."""
    with RedisClusterServers() as servers:
        yield servers


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The module's Redis, emptied before each test."""
    import redis  # noqa: PLC0415 -- sync client only needed for the flush

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def own_redis_cluster(telemetry: Telemetry) -> AsyncIterator[tuple[Cluster, RedisServer]]:
    """A cluster on a Redis of its own with append-only persistence, for tests that restart or stop Redis."""
    with RedisServer(appendonly=True) as server:
        local = Cluster(server.url, telemetry)
        yield local, server
        await local.close()


@pytest.fixture
async def on_redis_cluster(redis_cluster_servers: RedisClusterServers, telemetry: Telemetry) -> AsyncIterator[Cluster]:
    """An empty local cluster of services on the module's Redis Cluster, emptied first (services in cluster mode)."""
    redis_cluster_servers.flush()
    local = Cluster(redis_cluster_servers.url, telemetry, redis_cluster=True)
    yield local
    await local.close()


@pytest.fixture
async def cluster(redis_url: str, telemetry: Telemetry) -> AsyncIterator[Cluster]:
    """An empty local cluster; tests start the services they need."""
    local = Cluster(redis_url, telemetry)
    yield local
    await local.close()
