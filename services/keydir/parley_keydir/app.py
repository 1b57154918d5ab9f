"""Wiring of the key directory: settings -> Redis, identity channel -> store, resolver -> handler -> server."""

from __future__ import annotations

from pydantic import Field

from parley.keydir.v1 import keydir_pb2_grpc
from parley_keydir.handler import KeyDirectoryHandler, KeyDirectoryLimits
from parley_keydir.model import DrainGuard
from parley_keydir.servicer import ACCESS, SERVICE_NAME, KeyDirectoryServicer
from parley_keydir.store import RedisKeyStore
from parley_runtime.auth import Authenticator
from parley_runtime.config import IdentityPeerSettings
from parley_runtime.events import EventPublisher
from parley_runtime.health import service_dependencies
from parley_runtime.providers import RedisReplayGuard, follow_identity
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_runtime.recipients import IdentityRecipients
from parley_runtime.redis_batching import CommandBatcher
from parley_runtime.redis_client import connect
from parley_runtime.server import GrpcServer, ServiceDefinition
from parley_runtime.telemetry import Telemetry


class KeyDirectorySettings(IdentityPeerSettings):
    """Key-directory settings (``PARLEY_*`` environment variables; see the service README)."""

    port: int = Field(7102, ge=0, le=65535, description="gRPC port.")
    max_one_time_prekeys_per_call: int = Field(100, ge=1, le=10_000, description="One-time prekeys per upload.")
    max_one_time_prekeys: int = Field(1000, ge=1, le=100_000, description="Unclaimed one-time prekeys per device.")
    max_one_time_pq_prekeys: int = Field(
        200, ge=1, le=100_000, description="Unclaimed one-time PQ prekeys per device (about 1.6 KB each)."
    )
    low_watermark: int = Field(
        10, ge=0, le=10_000, description="Below this many one-time prekeys (or one-time PQ prekeys), ask to refill."
    )
    recipient_cache_s: float = Field(
        1.0, ge=0, le=1, description="Reuse of identity's answers (consent, devices, registration); at most 1 s."
    )
    fetch_burst: int = Field(100, ge=1, le=10_000_000, description="Bundle fetches a user may burst.")
    fetch_per_second: float = Field(1.0, gt=0, le=10_000_000, description="Sustained bundle fetches per user.")
    provider_fetch_burst: int = Field(
        10_000, ge=1, le=10_000_000, description="Bundle fetches a provider's users together may burst."
    )
    provider_fetch_per_second: float = Field(
        1000.0, gt=0, le=10_000_000, description="Sustained bundle fetches per provider, all its users together."
    )
    drain_guard_claims: int = Field(
        50, ge=1, le=1_000_000, description="One-time prekeys one device hands out per guard window, whoever asks."
    )
    drain_guard_window_s: int = Field(3600, ge=1, le=30 * 86_400, description="The drain guard's window.")


async def build_keydir(settings: KeyDirectorySettings, telemetry: Telemetry) -> GrpcServer:
    """Creates the key-directory server (not started); waits for identity's provider snapshot first."""
    client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
    )
    identity, providers = await follow_identity(settings, telemetry)
    recipients = IdentityRecipients(identity, ttl_s=settings.recipient_cache_s)
    # Identity's consent and device events drop cached answers at once; one connection blocks on them.
    events_client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=1,
        timeout_s=settings.redis_timeout_s,
        blocking_reads_s=1.0,
    )
    recipients.follow(events_client)
    # A fetch's Redis steps (replay guard, rate limits, claim) share pipelines with the calls served beside it.
    batcher = CommandBatcher(client)
    handler = KeyDirectoryHandler(
        RedisKeyStore(client, batcher),
        recipients,
        EventPublisher(client, "keys"),
        RateLimiter(client, batcher),
        KeyDirectoryLimits(
            max_one_time_prekeys_per_call=settings.max_one_time_prekeys_per_call,
            max_one_time_prekeys=settings.max_one_time_prekeys,
            max_one_time_pq_prekeys=settings.max_one_time_pq_prekeys,
            low_watermark=settings.low_watermark,
            fetch=Limit("keyfetch", capacity=settings.fetch_burst, per_second=settings.fetch_per_second),
            provider_fetch=Limit(
                "keyfetch_provider",
                capacity=settings.provider_fetch_burst,
                per_second=settings.provider_fetch_per_second,
            ),
            drain=DrainGuard(max_claims=settings.drain_guard_claims, window_ms=settings.drain_guard_window_s * 1000),
        ),
        telemetry.meter("parley.keydir"),
    )
    servicer = KeyDirectoryServicer(handler)
    definition = ServiceDefinition(
        name="keydir",
        service_names=[SERVICE_NAME],
        register=lambda server: keydir_pb2_grpc.add_KeyDirectoryServiceServicer_to_server(servicer, server),
        access=ACCESS,
        readiness=service_dependencies(client, identity),
        on_stop=[recipients.stop, providers.stop, identity.close, events_client.aclose, client.aclose],
    )
    authenticator = Authenticator.from_settings(
        settings, providers, RedisReplayGuard(client, batcher), registration=recipients
    )
    return GrpcServer(settings, definition, authenticator, telemetry)
