"""Wiring of the key directory: settings -> Redis, identity channel -> store, resolver -> handler -> server."""

from __future__ import annotations

import asyncio

from pydantic import Field

from parley.keydir.v1 import keydir_pb2_grpc
from parley_keydir.handler import KeyDirectoryHandler, KeyDirectoryLimits
from parley_keydir.identity_client import IdentityRecipientResolver
from parley_keydir.servicer import ACCESS, SERVICE_NAME, KeyDirectoryServicer
from parley_keydir.store import RedisKeyStore
from parley_runtime.auth import Authenticator
from parley_runtime.clients import internal_channel
from parley_runtime.config import ServiceSettings
from parley_runtime.events import EventPublisher
from parley_runtime.providers import RedisReplayGuard, WatchedProviderDirectory
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_runtime.redis_client import connect
from parley_runtime.server import GrpcServer, ServiceDefinition
from parley_runtime.telemetry import Telemetry


class KeyDirectorySettings(ServiceSettings):
    """Key-directory settings (``PARLEY_*`` environment variables; see the service README)."""

    port: int = Field(7102, ge=0, le=65535, description="gRPC port.")
    identity_target: str = Field("127.0.0.1:7101", min_length=1, description="Identity service host:port.")
    max_one_time_prekeys_per_call: int = Field(100, ge=1, le=10_000, description="One-time prekeys per upload.")
    max_one_time_prekeys: int = Field(1000, ge=1, le=100_000, description="Unclaimed one-time prekeys per device.")
    low_watermark: int = Field(10, ge=0, le=10_000, description="Below this many one-time prekeys, ask to refill.")
    fetch_burst: int = Field(100, ge=1, le=10_000_000, description="Bundle fetches a user may burst.")
    fetch_per_second: float = Field(1.0, gt=0, le=10_000_000, description="Sustained bundle fetches per user.")
    startup_timeout_s: float = Field(30.0, gt=0, le=600, description="Wait for identity's provider list at start.")


async def build_keydir(settings: KeyDirectorySettings, telemetry: Telemetry) -> GrpcServer:
    """Creates the key-directory server (not started); waits for identity's provider snapshot first."""
    client = connect(settings.redis_url, max_connections=settings.redis_max_connections)
    identity = internal_channel(
        settings.identity_target, internal_token=settings.internal_token.get_secret_value(), telemetry=telemetry
    )
    providers = WatchedProviderDirectory(identity)
    providers.start()
    async with asyncio.timeout(settings.startup_timeout_s):
        await providers.wait_ready()
    handler = KeyDirectoryHandler(
        RedisKeyStore(client),
        IdentityRecipientResolver(identity),
        EventPublisher(client, "keys"),
        RateLimiter(client),
        KeyDirectoryLimits(
            max_one_time_prekeys_per_call=settings.max_one_time_prekeys_per_call,
            max_one_time_prekeys=settings.max_one_time_prekeys,
            low_watermark=settings.low_watermark,
            fetch=Limit("keyfetch", capacity=settings.fetch_burst, per_second=settings.fetch_per_second),
        ),
        telemetry.meter("parley.keydir"),
    )
    servicer = KeyDirectoryServicer(handler)
    definition = ServiceDefinition(
        name="keydir",
        service_names=[SERVICE_NAME],
        register=lambda server: keydir_pb2_grpc.add_KeyDirectoryServiceServicer_to_server(servicer, server),
        access=ACCESS,
        on_stop=[providers.stop, identity.close, client.aclose],
    )
    authenticator = Authenticator.from_settings(settings, providers, RedisReplayGuard(client))
    return GrpcServer(settings, definition, authenticator, telemetry)
