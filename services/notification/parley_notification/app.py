"""Wiring of the notification service: settings -> Redis, identity channel (providers, devices) -> store, router,
intake, delivery worker, notice hub -> handler -> server."""

from __future__ import annotations

import os
import secrets
import socket

from pydantic import Field, model_validator

from parley.notification.v1 import notification_pb2_grpc
from parley_notification.delivery import DeliveryPolicy, DeliveryWorker
from parley_notification.handler import HandlerLimits, NotificationHandler
from parley_notification.identity_client import IdentityDeviceRegistry
from parley_notification.intake import EventIntake, IntakePolicy
from parley_notification.notices import NoticeHub
from parley_notification.routing import Router
from parley_notification.servicer import ACCESS, SERVICE_NAME, NotificationServicer
from parley_notification.store import RedisNotificationStore
from parley_notification.webhook_client import WebhookClient
from parley_runtime import redis_keys
from parley_runtime.auth import Authenticator
from parley_runtime.config import IdentityPeerSettings
from parley_runtime.health import service_dependencies
from parley_runtime.providers import RedisReplayGuard, follow_identity
from parley_runtime.redis_client import connect
from parley_runtime.server import GrpcServer, ServiceDefinition
from parley_runtime.telemetry import Telemetry


class NotificationSettings(IdentityPeerSettings):
    """Notification settings (``PARLEY_*`` environment variables; see the service README)."""

    port: int = Field(7104, ge=0, le=65535, description="gRPC port.")
    event_domains: str = Field(
        "identity,keys,relay,moderation",
        pattern=r"^[a-z]+(,[a-z]+)*$",
        description="Comma-separated event stream domains to consume (events:{<domain>}).",
    )
    consumer_group: str = Field("notification", min_length=1, description="Consumer group all replicas share.")
    consumer_name: str = Field("", description="This replica's consumer name; empty: host, pid and a random part.")
    read_block_ms: int = Field(1000, ge=1, le=4000, description="How long one stream read waits for events.")
    reclaim_idle_ms: int = Field(
        30_000, ge=1, le=3_600_000, description="Pending this long, an event is taken over by another replica."
    )
    reclaim_interval_ms: int = Field(5_000, ge=1, le=600_000, description="How often to look for such events.")
    forget_consumer_idle_ms: int = Field(
        86_400_000,
        ge=60_000,
        le=30 * 86_400_000,
        description="A consumer without pending events leaves the group after this long without reading.",
    )
    coalesce_window_ms: int = Field(2_000, ge=0, le=600_000, description="Window of one device's wake-ups.")
    webhook_timeout_s: float = Field(5.0, gt=0, le=60, description="Total time of one webhook call.")
    webhook_cache_s: float = Field(
        1.0, ge=0, le=300, description="How long a replica reuses a webhook it read (re-registrations elsewhere)."
    )
    webhook_allow_loopback_http: bool = Field(
        False, description="Accept http:// webhooks on loopback hosts (development and tests only)."
    )
    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before a delivery is dead-lettered.")
    backoff_base_ms: int = Field(1000, ge=1, le=3_600_000, description="Delay before the second attempt.")
    backoff_max_ms: int = Field(600_000, ge=1, le=86_400_000, description="Longest delay between attempts.")
    delivery_lease_ms: int = Field(
        30_000, ge=10, le=3_600_000, description="How long an attempt holds its delivery (beyond the timeout)."
    )
    delivery_concurrency: int = Field(64, ge=1, le=10_000, description="Webhook calls in flight per replica.")
    poll_interval_ms: int = Field(200, ge=1, le=60_000, description="Longest idle wait between schedule looks.")
    dead_letter_maxlen: int = Field(100_000, ge=100, le=10_000_000, description="Dead letters kept (approx.).")
    notices_maxlen: int = Field(100_000, ge=100, le=10_000_000, description="Notices kept in the stream (approx.).")
    max_notice_watchers: int = Field(10_000, ge=1, le=1_000_000, description="WatchNotices calls per replica.")

    @model_validator(mode="after")
    def _lease_outlives_timeout(self) -> NotificationSettings:
        if self.delivery_lease_ms <= self.webhook_timeout_s * 1000:
            raise ValueError("delivery_lease_ms must exceed webhook_timeout_s, or attempts would overlap")
        return self


def _consumer_name(configured: str) -> str:
    # Unique per process: a restarted replica is a new consumer, and its predecessor's pending events are
    # reclaimed by idle time like any crashed consumer's.
    return configured or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


async def build_notification(settings: NotificationSettings, telemetry: Telemetry) -> GrpcServer:
    """Creates the notification server (not started); waits for identity's provider snapshot first, and starts
    the event intake, the delivery worker and the notice hub, which stop with the server."""
    # Intake and notices read with XREAD BLOCK: their commands' deadline runs past the wait.
    blocking = settings.read_block_ms / 1000
    client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
        blocking_reads_s=blocking,
    )
    notice_client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=4,
        timeout_s=settings.redis_timeout_s,
        blocking_reads_s=blocking,
    )
    identity, providers = await follow_identity(settings, telemetry)
    store = RedisNotificationStore(
        client,
        notice_client,
        webhook_cache_s=settings.webhook_cache_s,
        # The rest of the pool serves authentication (assertion ids) and the blocking stream reads' bursts.
        max_commands=max(1, settings.redis_max_connections - 8),
    )
    meter = telemetry.meter("parley.notification")
    webhooks = WebhookClient(
        timeout_s=settings.webhook_timeout_s,
        max_connections=settings.delivery_concurrency,
        allow_loopback=settings.webhook_allow_loopback_http,
    )
    worker = DeliveryWorker(
        store,
        webhooks,
        providers,
        DeliveryPolicy(
            max_attempts=settings.max_attempts,
            backoff_base_ms=settings.backoff_base_ms,
            backoff_max_ms=settings.backoff_max_ms,
            lease_ms=settings.delivery_lease_ms,
            concurrency=settings.delivery_concurrency,
            # A quarter of the places: claims stay rare under a backlog, and as many claimed ahead keep every place
            # busy while the next claim is on its way.
            claim_batch=max(1, settings.delivery_concurrency // 4),
            attempt_timeout_ms=int(settings.webhook_timeout_s * 1000),
            poll_interval_ms=settings.poll_interval_ms,
            dead_letter_maxlen=settings.dead_letter_maxlen,
        ),
        meter,
    )
    intake = EventIntake(
        store,
        Router(providers, store),
        IntakePolicy(
            streams=[redis_keys.event_stream(domain) for domain in settings.event_domains.split(",")],
            group=settings.consumer_group,
            consumer=_consumer_name(settings.consumer_name),
            block_ms=settings.read_block_ms,
            reclaim_idle_ms=settings.reclaim_idle_ms,
            reclaim_interval_ms=settings.reclaim_interval_ms,
            forget_idle_ms=settings.forget_consumer_idle_ms,
            coalesce_window_ms=settings.coalesce_window_ms,
            notices_maxlen=settings.notices_maxlen,
        ),
        meter,
        telemetry.tracer("parley.notification"),
        on_queued=worker.wake,
    )
    hub = NoticeHub(store, max_watchers=settings.max_notice_watchers, block_ms=settings.read_block_ms)
    handler = NotificationHandler(
        store,
        hub,
        IdentityDeviceRegistry(identity),
        HandlerLimits(allow_loopback_http=settings.webhook_allow_loopback_http),
    )
    servicer = NotificationServicer(handler)
    hub.start()
    worker.start()
    intake.start()
    definition = ServiceDefinition(
        name="notification",
        service_names=[SERVICE_NAME],
        register=lambda server: notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server),
        access=ACCESS,
        readiness=service_dependencies(client, identity),
        on_stop=[
            intake.stop,
            worker.stop,
            hub.stop,
            webhooks.close,
            providers.stop,
            identity.close,
            notice_client.aclose,
            client.aclose,
        ],
    )
    authenticator = Authenticator.from_settings(settings, providers, RedisReplayGuard(client))
    return GrpcServer(settings, definition, authenticator, telemetry)
