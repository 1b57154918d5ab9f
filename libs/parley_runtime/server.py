"""The ``grpc.aio`` server bootstrap every Parley service runs on.

It installs the call interceptor (:class:`~parley_runtime.interceptors.CallInterceptor`: tracing, error mapping
with RPC metrics, request limits and authentication, in one layer); the standard health service (``liveness``, and
``readiness`` with the overall ``""`` and one status per service following the dependency checks: see
:mod:`parley_runtime.health`) and server reflection; and graceful shutdown: on SIGTERM every health status turns
NOT_SERVING (so load balancers stop sending), the server stops accepting calls, and in-flight calls get
``shutdown_grace_s`` to finish.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from parley_runtime.auth import Access, Authenticator
from parley_runtime.config import ConfigError, ServiceSettings, SettingsT, load_settings
from parley_runtime.health import Check, Readiness
from parley_runtime.interceptors import CallInterceptor
from parley_runtime.logs import configure_logging
from parley_runtime.telemetry import Telemetry, configure_telemetry

_log = logging.getLogger(__name__)


@dataclass
class ServiceDefinition:
    """What a service contributes to the server.

    Attributes:
        name: short name for logs and telemetry, e.g. ``"identity"``.
        service_names: full gRPC service names, e.g. ``"parley.identity.v1.IdentityService"``.
        register: adds the servicers to the server.
        access: full method name -> accepted principals; methods not listed are refused.
        on_stop: coroutines run after the server stopped (close clients, stop background tasks).
        untraced_streams: full names of long-lived streaming methods that get no call-long span. Such a span
            would live (and hold memory) as long as the connection and be exported only when it ends; the
            service traces the stream's frames itself instead.
        readiness: named checks of the dependencies the service cannot work without (see
            :mod:`parley_runtime.health`); readiness follows them.
        internal_callers: full method name -> the services (by credential name) an INTERNAL method serves.
    """

    name: str
    service_names: Sequence[str]
    register: Callable[[grpc.aio.Server], None]
    access: Mapping[str, Access]
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    untraced_streams: Collection[str] = ()
    readiness: Sequence[tuple[str, Check]] = ()
    internal_callers: Mapping[str, frozenset[str]] = field(default_factory=dict)


class GrpcServer:
    """One service's gRPC server.

    Args:
        settings: the service's settings (bind address, limits, grace period).
        definition: the service's servicers and policies.
        authenticator: verifies credentials for the auth interceptor.
        telemetry: the process's telemetry.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        definition: ServiceDefinition,
        authenticator: Authenticator,
        telemetry: Telemetry,
    ) -> None:
        self._settings = settings
        self._definition = definition
        self._server = grpc.aio.server(
            interceptors=[
                CallInterceptor(
                    authenticator,
                    definition.access,
                    tracer=telemetry.tracer(f"parley.{definition.name}"),
                    meter=telemetry.meter(f"parley.{definition.name}"),
                    max_inflight=settings.max_inflight_calls,
                    untraced=definition.untraced_streams,
                    client_certificates=bool(settings.tls_client_ca_file),
                    internal_callers=definition.internal_callers,
                ),
            ],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # Keepalive pings from clients every 20 s at most, so idle streams survive NATs and proxies.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # gRPC core queues calls that arrive faster than the event loop takes them up; past its default
                # of 1,000 it cancels a random share of them (CANCELLED, and the handler never runs). A relay
                # replica restarting moves thousands of devices' streams at once, so the queue must hold a
                # reconnect burst; the hard limit, where every new call is cancelled, is twice that.
                ("grpc.server.max_pending_requests", settings.max_pending_calls),
                ("grpc.server.max_pending_requests_hard_limit", 2 * settings.max_pending_calls),
            ],
        )
        self._health = health_aio.HealthServicer()
        self._readiness = Readiness(
            self._health,
            ["", *definition.service_names],
            definition.readiness,
            interval_s=settings.readiness_interval_s,
        )
        self.port = 0

    async def start(self) -> int:
        """Registers everything, binds, starts serving and returns the bound port."""
        definition = self._definition
        definition.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [
                *definition.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        address = f"{self._settings.host}:{self._settings.port}"
        credentials = server_credentials(self._settings)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        if not self.port:
            raise OSError(f"could not bind {self._settings.host}:{self._settings.port}")
        await self._server.start()
        await self._readiness.start()
        _log.info("serving", extra={"service": definition.name, "port": self.port})
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drains: NOT_SERVING, stop accepting, let in-flight calls finish within ``grace`` seconds."""
        grace = self._settings.shutdown_grace_s if grace is None else grace
        await self._readiness.stop()
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        for hook in self._definition.on_stop:
            await hook()
        _log.info("stopped", extra={"service": self._definition.name})

    async def wait_for_termination(self) -> None:
        """Returns when the server has stopped."""
        await self._server.wait_for_termination()


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (client certificates required when a client CA is set), or
    None to serve plaintext (behind a mesh or ingress that terminates TLS, and in tests)."""
    if not settings.tls_cert_file:
        return None
    client_ca = Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def run_service(
    name: str,
    settings_class: type[SettingsT],
    build: Callable[[SettingsT, Telemetry], Awaitable[GrpcServer]],
) -> None:
    """The ``main`` of every service: settings, logs, telemetry, then serve until SIGTERM.

    A bad configuration exits with status 2 and a message naming each bad variable.

    Args:
        name: the service's short name (``identity``, ...).
        settings_class: its settings.
        build: wires the service and returns its (not yet started) server.
    """
    try:
        settings = load_settings(settings_class)
    except ConfigError as exc:
        print(f"parley-{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, settings.log_level)
    telemetry = configure_telemetry(f"parley-{name}", metrics_port=settings.metrics_port)

    async def main() -> None:
        try:
            server = await build(settings, telemetry)
        except Exception:
            # Redis or a peer service unreachable at start: one JSON line saying so, then a non-zero exit
            # so the orchestrator restarts us with backoff.
            _log.exception("startup failed", extra={"service": name})
            raise SystemExit(1) from None
        _settle_garbage_collector()
        await serve_until_signalled(server)

    asyncio.run(main())


GC_FIRST_GENERATION_THRESHOLD = 10_000
"""Allocations between young-generation collections while serving (Python's default is 700)."""


def _settle_garbage_collector() -> None:
    """Takes start-up objects out of the collector's sight and collects the young generation less often.

    What start-up built (modules, generated protobuf classes, clients) lives as long as the process; frozen, it
    is no longer re-scanned by every older-generation collection. Serving allocates many short-lived objects per
    request; a higher young-generation threshold means far fewer collections, each a pause that every call in
    flight waits for, for a little more memory.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, middle, old)


async def serve_until_signalled(server: GrpcServer) -> None:
    """Starts ``server`` and runs until SIGTERM or SIGINT, then shuts down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    _log.info("signal received; draining")
    await server.stop()
