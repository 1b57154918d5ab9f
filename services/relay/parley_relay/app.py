"""Wiring of the relay: settings -> Redis, identity and moderation channels -> store, hub -> handler -> server."""

from __future__ import annotations

import base64
import binascii
import socket

from pydantic import Field, SecretStr, field_validator

from parley.common.v1.common_pb2 import Feature
from parley.relay.v1 import relay_pb2_grpc
from parley_relay.admission import StreamAdmission
from parley_relay.connection import StreamSettings
from parley_relay.handler import RelayHandler, RelayLimits, SendPolicy
from parley_relay.hub import MailboxHub
from parley_relay.media import MediaHandler, MediaLimits
from parley_relay.moderation_client import ModerationPolicy, NoModeration
from parley_relay.parity import ParityRecorder, ParityReports
from parley_relay.servicer import ACCESS, SERVICE_NAME, RelayServicer
from parley_relay.store import RedisMailboxStore
from parley_runtime.auth import Authenticator
from parley_runtime.clients import internal_channel, peer_tls
from parley_runtime.config import IdentityPeerSettings
from parley_runtime.events import EventPublisher
from parley_runtime.health import service_dependencies
from parley_runtime.providers import RedisReplayGuard, follow_identity
from parley_runtime.recipients import IdentityRecipients
from parley_runtime.redis_batching import CommandBatcher
from parley_runtime.redis_client import connect
from parley_runtime.server import GrpcServer, ServiceDefinition
from parley_runtime.telemetry import Telemetry
from parley_stanza import Limits


class RelaySettings(IdentityPeerSettings):
    """Relay settings (``PARLEY_*`` environment variables; see the service README)."""

    port: int = Field(7100, ge=0, le=65535, description="gRPC port.")
    moderation_target: str = Field("", description="Moderation service host:port; empty: no moderation checks.")
    franking_key: SecretStr = Field(
        SecretStr(""), description="Base64 of the >= 32-byte key stamping franking commitments."
    )
    max_stanza_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest stanza.")
    retention_s: int = Field(30 * 86_400, ge=60, le=365 * 86_400, description="How long undelivered stanzas wait.")
    max_backlog: int = Field(
        10_000, ge=1, le=10_000_000, description="Undelivered stanzas one device's mailbox may hold (MAILBOX_FULL)."
    )
    recipient_cache_s: float = Field(
        1.0, ge=0, le=1, description="Reuse of identity's answers (consent, devices, registration); at most 1 s."
    )
    stream_window: int = Field(256, ge=1, le=100_000, description="Unacknowledged deliveries per stream.")
    stream_poll_s: float = Field(
        30.0, gt=0, le=600, description="Safety-net mailbox re-read interval of idle streams (hints wake them)."
    )
    max_streams_per_provider: int = Field(100_000, ge=1, description="Open streams per provider on one replica.")
    max_media_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024, description="Largest blob.")
    media_retention_s: int = Field(30 * 86_400, ge=60, le=365 * 86_400, description="How long blobs live.")
    media_daily_quota_bytes: int = Field(10 * 1024**3, ge=1024, description="Bytes a provider may upload per day.")
    media_user_daily_quota_bytes: int = Field(1024**3, ge=1024, description="Bytes a user may upload per day.")
    upload_window_s: int = Field(86_400, ge=60, le=7 * 86_400, description="How long an upload can be resumed.")
    replica: str = Field(default_factory=socket.gethostname, min_length=1, description="This replica's name.")
    native_provider: str = Field(
        "", description="The gatekeeper's own provider id: the native side of the parity report ('' for none)."
    )
    parity_retention_s: int = Field(
        8 * 86_400, ge=3600, le=90 * 86_400, description="How long per-provider parity counts are kept."
    )

    @field_validator("franking_key")
    @classmethod
    def _franking_key_is_base64(cls, value: SecretStr) -> SecretStr:
        if encoded := value.get_secret_value():
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ValueError("must be base64") from None
            if len(key) < 32:
                raise ValueError("must decode to at least 32 bytes")
        return value


async def build_relay(settings: RelaySettings, telemetry: Telemetry) -> GrpcServer:
    """Creates the relay server (not started); waits for identity's provider snapshot first."""
    client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
    )
    identity, providers = await follow_identity(settings, telemetry)
    channels = [identity]
    policy: SendPolicy = NoModeration()
    if settings.moderation_target:
        token = settings.internal_token.get_secret_value()
        moderation = internal_channel(
            settings.moderation_target, internal_token=token, telemetry=telemetry, tls=peer_tls(settings)
        )
        channels.append(moderation)
        policy = ModerationPolicy(moderation)
    store = RedisMailboxStore(client)
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
    hub = MailboxHub(client, store, replica=settings.replica)
    await hub.start()
    # Open streams re-check their provider's status when it changes (the kill switch), not on a timer.
    providers.on_change(hub.wake_provider)

    def provider_features(provider_id: str) -> frozenset[Feature.ValueType]:
        record = providers.get(provider_id)
        return record.features if record is not None else frozenset()

    parity = ParityRecorder(client, telemetry.meter("parley.relay"), retention_s=settings.parity_retention_s)
    parity.start()
    handler = RelayHandler(
        store,
        recipients,
        policy,
        EventPublisher(client, "relay"),
        franking_key=base64.b64decode(settings.franking_key.get_secret_value()),
        provider_features=provider_features,
        limits=RelayLimits(
            stanza=Limits(max_bytes=settings.max_stanza_bytes),
            retention_ms=settings.retention_s * 1000,
            backlog_cap=settings.max_backlog,
        ),
        meter=telemetry.meter("parley.relay"),
        parity=parity,
    )

    servicer = RelayServicer(
        handler,
        hub,
        MediaHandler(
            client,
            MediaLimits(
                max_bytes=settings.max_media_bytes,
                retention_s=settings.media_retention_s,
                daily_quota_bytes=settings.media_daily_quota_bytes,
                user_daily_quota_bytes=settings.media_user_daily_quota_bytes,
                upload_window_s=settings.upload_window_s,
            ),
        ),
        StreamSettings(window=settings.stream_window, poll_interval_s=settings.stream_poll_s),
        StreamAdmission(providers).refusal,
        max_streams_per_provider=settings.max_streams_per_provider,
        parity=ParityReports(
            parity,
            providers=lambda: [record.provider_id for record in providers.all()],
            native=settings.native_provider,
            max_window_ms=settings.parity_retention_s * 1000,
        ),
    )

    async def close_channels() -> None:
        for channel in channels:
            await channel.close()

    definition = ServiceDefinition(
        name="relay",
        service_names=[SERVICE_NAME],
        register=lambda server: relay_pb2_grpc.add_RelayServiceServicer_to_server(servicer, server),
        access=ACCESS,
        readiness=service_dependencies(client, identity),
        on_stop=[
            parity.stop,
            hub.stop,
            recipients.stop,
            providers.stop,
            close_channels,
            events_client.aclose,
            client.aclose,
        ],
        untraced_streams=[f"/{SERVICE_NAME}/Connect"],
    )
    # Calls with assertions record them first thing; concurrent calls' records share pipelines.
    replay_guard = RedisReplayGuard(client, CommandBatcher(client))
    authenticator = Authenticator.from_settings(settings, providers, replay_guard, registration=recipients)
    return GrpcServer(settings, definition, authenticator, telemetry)
