"""Wiring of moderation: settings -> Redis, identity channel (provider cache) -> store -> send-check batcher ->
handler -> server."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr, field_validator

from parley.moderation.v1 import moderation_pb2_grpc
from parley_moderation.batcher import SendCheckBatcher
from parley_moderation.handler import ModerationHandler, ModerationLimits
from parley_moderation.servicer import ACCESS, INTERNAL_CALLERS, SERVICE_NAME, ModerationServicer
from parley_moderation.store import RedisModerationStore
from parley_runtime.auth import Authenticator
from parley_runtime.config import IdentityPeerSettings
from parley_runtime.events import EventPublisher
from parley_runtime.health import service_dependencies
from parley_runtime.providers import RedisReplayGuard, follow_identity
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_runtime.redis_client import connect
from parley_runtime.server import GrpcServer, ServiceDefinition
from parley_runtime.telemetry import Telemetry

_DAY_S = 86_400
_MAX_RATE = 10_000_000
_MAX_BURST = 100_000_000


class ModerationSettings(IdentityPeerSettings):
    """Moderation settings (``PARLEY_*`` environment variables; see the service README)."""

    port: int = Field(7103, ge=0, le=65535, description="gRPC port.")
    franking_key: SecretStr = Field(
        description="Base64 of the relay's franking key (at least 32 bytes), shared with the relay."
    )
    send_burst: float = Field(120, ge=1, le=_MAX_BURST, description="Messages a sender (user) may burst.")
    send_per_second: float = Field(2.0, gt=0, le=_MAX_RATE, description="Sustained messages per sender.")
    first_contact_burst: float = Field(
        10, ge=1, le=_MAX_BURST, description="Messages to users who never replied, burst."
    )
    first_contact_per_second: float = Field(
        10 / 3600, gt=0, le=_MAX_RATE, description="Sustained first-contact messages."
    )
    provider_burst: float = Field(20_000, ge=1, le=_MAX_BURST, description="Messages a sender's provider may burst.")
    provider_per_second: float = Field(2_000, gt=0, le=_MAX_RATE, description="Sustained messages per sender provider.")
    provider_first_contact_burst: float = Field(
        10_000, ge=1, le=_MAX_BURST, description="First-contact messages all users of one provider may burst."
    )
    provider_first_contact_per_second: float = Field(
        10_000 / 3600, gt=0, le=_MAX_RATE, description="Sustained first-contact messages per sender provider."
    )
    provider_quota: int = Field(0, ge=0, description="Device copies a provider may send per quota window; 0: none.")
    provider_quota_overrides: dict[str, int] = Field(
        default_factory=dict, description='Per-provider quotas as JSON, e.g. {"birdy": 1000000}.'
    )
    quota_window_s: int = Field(_DAY_S, ge=1, le=31 * _DAY_S, description="Length of a quota window.")
    breaker_threshold: int = Field(1000, ge=0, description="Limit refusals that open a provider's breaker; 0: none.")
    breaker_window_s: float = Field(10.0, gt=0, le=3600, description="Window the breaker counts refusals in.")
    breaker_cooldown_s: float = Field(30.0, gt=0, le=_DAY_S, description="How long an open breaker refuses.")
    max_fan_out: int = Field(1000, ge=1, le=100_000, description="Most device copies one send may declare.")
    max_check_batch: int = Field(1000, ge=1, le=100_000, description="Most sends one CheckSendBatch call may decide.")
    max_contacts: int = Field(10_000, ge=1, le=1_000_000, description="Contacts remembered per user.")
    contact_ttl_s: int = Field(90 * _DAY_S, ge=60, description="Contact memory after the last message.")
    max_blocks: int = Field(10_000, ge=1, le=1_000_000, description="Blocks a user may hold.")
    report_burst: float = Field(20, ge=1, le=_MAX_BURST, description="Reports a user may burst.")
    report_per_second: float = Field(20 / _DAY_S, gt=0, le=_MAX_RATE, description="Sustained reports per user.")
    max_report_plaintext_bytes: int = Field(65_536, ge=1, le=4 * 1024 * 1024, description="Largest revealed message.")
    restrict_after_reports: int = Field(3, ge=0, description="Distinct verified reporters that restrict; 0: never.")
    report_window_s: int = Field(30 * _DAY_S, ge=60, description="Window in which verified reports count.")
    restriction_s: int = Field(7 * _DAY_S, ge=1, description="How long a restriction lasts.")

    @field_validator("franking_key")
    @classmethod
    def _franking_key_is_base64(cls, value: SecretStr) -> SecretStr:
        try:
            key = base64.b64decode(value.get_secret_value(), validate=True)
        except binascii.Error:
            raise ValueError("must be base64") from None
        if len(key) < 32:
            raise ValueError("must decode to at least 32 bytes")
        return value

    def limits(self) -> ModerationLimits:
        """The handler's limits from these settings."""
        return ModerationLimits(
            sender=Limit("send", capacity=self.send_burst, per_second=self.send_per_second),
            first_contact=Limit(
                "first_contact", capacity=self.first_contact_burst, per_second=self.first_contact_per_second
            ),
            provider=Limit("provider_send", capacity=self.provider_burst, per_second=self.provider_per_second),
            provider_first_contact=Limit(
                "provider_first_contact",
                capacity=self.provider_first_contact_burst,
                per_second=self.provider_first_contact_per_second,
            ),
            provider_quota=self.provider_quota,
            provider_quota_overrides=dict(self.provider_quota_overrides),
            quota_window_ms=self.quota_window_s * 1000,
            breaker_threshold=self.breaker_threshold,
            breaker_window_ms=int(self.breaker_window_s * 1000),
            breaker_cooldown_ms=int(self.breaker_cooldown_s * 1000),
            max_fan_out=self.max_fan_out,
            max_check_batch=self.max_check_batch,
            max_contacts=self.max_contacts,
            contact_ttl_ms=self.contact_ttl_s * 1000,
            max_blocks=self.max_blocks,
            report=Limit("report", capacity=self.report_burst, per_second=self.report_per_second),
            max_report_plaintext_bytes=self.max_report_plaintext_bytes,
            # Half the message limit for plaintexts leaves room for the rest of each report and its audit trail.
            max_report_page=max(1, min(500, self.max_message_bytes // 2 // self.max_report_plaintext_bytes)),
            restrict_after_reports=self.restrict_after_reports,
            report_window_ms=self.report_window_s * 1000,
            restriction_ms=self.restriction_s * 1000,
        )


async def build_moderation(settings: ModerationSettings, telemetry: Telemetry) -> GrpcServer:
    """Creates the moderation server (not started); waits for identity's provider snapshot first."""
    client = connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
    )
    identity, providers = await follow_identity(settings, telemetry)
    store = RedisModerationStore(client)
    limits = settings.limits()
    handler = ModerationHandler(
        store,
        SendCheckBatcher(store, max_batch=limits.max_check_batch),
        providers,
        EventPublisher(client, "moderation"),
        RateLimiter(client),
        limits,
        base64.b64decode(settings.franking_key.get_secret_value()),
        telemetry.meter("parley.moderation"),
    )
    servicer = ModerationServicer(handler)
    definition = ServiceDefinition(
        name="moderation",
        service_names=[SERVICE_NAME],
        register=lambda server: moderation_pb2_grpc.add_ModerationServiceServicer_to_server(servicer, server),
        access=ACCESS,
        internal_callers=INTERNAL_CALLERS,
        readiness=service_dependencies(client, identity),
        on_stop=[providers.stop, identity.close, client.aclose],
    )
    authenticator = Authenticator.from_settings(settings, providers, RedisReplayGuard(client))
    return GrpcServer(settings, definition, authenticator, telemetry)
