"""Wiring of the identity service: settings -> Redis -> store -> directory -> handler -> servicer -> server."""

from __future__ import annotations

from pydantic import Field

from parley.identity.v1 import identity_pb2_grpc
from parley_identity.directory import IdentityProviderDirectory
from parley_identity.handler import IdentityHandler, IdentityLimits
from parley_identity.servicer import ACCESS, INTERNAL_CALLERS, SERVICE_NAME, IdentityServicer
from parley_identity.store import RedisIdentityStore
from parley_runtime.auth import Authenticator
from parley_runtime.config import ServiceSettings
from parley_runtime.events import EventPublisher
from parley_runtime.health import service_dependencies
from parley_runtime.providers import RedisReplayGuard
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_runtime.redis_client import connect
from parley_runtime.server import GrpcServer, ServiceDefinition
from parley_runtime.telemetry import Telemetry


class IdentitySettings(ServiceSettings):
    """Identity settings (``PARLEY_*`` environment variables; see the service README)."""

    port: int = Field(7101, ge=0, le=65535, description="gRPC port.")
    max_devices_per_user: int = Field(6, ge=1, le=100, description="Devices a user may register.")
    lookup_burst: int = Field(60, ge=1, le=100_000, description="Address lookups a user may burst.")
    lookup_per_second: float = Field(1.0, gt=0, le=10_000, description="Sustained address lookups per user.")
    provider_resync_s: float = Field(30.0, gt=0, le=3600, description="Backstop full reload of providers.")
    max_mutes_per_user: int = Field(1000, ge=1, le=100_000, description="Mutes a user may hold.")


async def build_identity(settings: IdentitySettings, telemetry: Telemetry) -> GrpcServer:
    """Creates the identity server (not started); loads the providers before returning."""
    client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
    )
    store = RedisIdentityStore(client)
    directory = IdentityProviderDirectory(store, client, resync_s=settings.provider_resync_s)
    await directory.start()
    handler = IdentityHandler(
        store,
        directory,
        EventPublisher(client, "identity"),
        RateLimiter(client),
        IdentityLimits(
            max_devices_per_user=settings.max_devices_per_user,
            max_mutes_per_user=settings.max_mutes_per_user,
            lookup=Limit("lookup", capacity=settings.lookup_burst, per_second=settings.lookup_per_second),
        ),
    )
    sessions = settings.session_keys()
    servicer = IdentityServicer(handler, directory, sessions=sessions, session_lifetime_s=settings.session_lifetime_s)
    definition = ServiceDefinition(
        name="identity",
        service_names=[SERVICE_NAME],
        register=lambda server: identity_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, server),
        access=ACCESS,
        internal_callers=INTERNAL_CALLERS,
        readiness=service_dependencies(client),
        on_stop=[directory.stop, client.aclose],
    )
    authenticator = Authenticator.from_settings(settings, directory, RedisReplayGuard(client))
    return GrpcServer(settings, definition, authenticator, telemetry)
