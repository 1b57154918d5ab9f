"""The services a soak runs against: Redis with persistence and the five services as processes, two relays."""

from __future__ import annotations

import asyncio
import base64
import secrets
from dataclasses import dataclass, field

import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.common.v1.common_pb2 import Feature, IdentifierKind
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley_runtime.credentials import new_credentials
from parley_runtime.testing import RedisServer, ServiceProcess

_UNLIMITED = "1000000"


@dataclass
class LocalStack:
    """Redis (append-only, fsync on every write) and identity, key directory, moderation, notification and
    ``relays`` relay replicas as processes on free loopback ports.

    Moderation's per-user limits are lifted: a soak measures what faults do to delivery, not the limits.
    """

    relays: int = 2
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    redis: RedisServer = field(default_factory=lambda: RedisServer(appendonly=True))
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    _identity: grpc.aio.Channel | None = None

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        """Call metadata of the gatekeeper's operator."""
        return (("authorization", f"Bearer {self.admin_token}"),)

    @property
    def relay_names(self) -> list[str]:
        """The relay replicas' names, ``relay-0``, ``relay-1``, ..."""
        return [f"relay-{index}" for index in range(self.relays)]

    def start(self) -> None:
        """Starts Redis, then identity, then the services that follow it; each waits for its health check."""
        self.redis.start()
        credentials = new_credentials()
        env = {"PARLEY_REDIS_URL": self.redis.url, "PARLEY_ADMIN_TOKEN": self.admin_token, "PARLEY_LOG_LEVEL": "ERROR"}
        identity = ServiceProcess("parley_identity", env, credentials=credentials)
        identity.start()
        self.services["identity"] = identity
        peers = {**env, "PARLEY_IDENTITY_TARGET": identity.target}
        franking = {"PARLEY_FRANKING_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
        limits = {
            f"PARLEY_{name}": _UNLIMITED
            for name in ("SEND_BURST", "SEND_PER_SECOND", "FIRST_CONTACT_BURST", "FIRST_CONTACT_PER_SECOND")
        }
        self.services["keydir"] = ServiceProcess("parley_keydir", peers, credentials=credentials)
        self.services["moderation"] = ServiceProcess(
            "parley_moderation", {**peers, **franking, **limits}, credentials=credentials
        )
        self.services["notification"] = ServiceProcess("parley_notification", peers, credentials=credentials)
        for name in ("keydir", "moderation", "notification"):
            self.services[name].start()
        relay_env = {**peers, **franking, "PARLEY_MODERATION_TARGET": self.services["moderation"].target}
        for name in self.relay_names:
            self.services[name] = ServiceProcess(
                "parley_relay", {**relay_env, "PARLEY_REPLICA": name}, credentials=credentials
            )
            self.services[name].start()

    def stop(self) -> None:
        """Stops every process, relays first, and removes Redis's data."""
        for service in reversed(list(self.services.values())):
            service.stop()
        self.redis.close()

    def identity(self) -> identity_pb2_grpc.IdentityServiceStub:
        """A stub on identity, on a channel kept until :meth:`close_channels`."""
        if self._identity is None:
            self._identity = grpc.aio.insecure_channel(self.services["identity"].target)
        return identity_pb2_grpc.IdentityServiceStub(self._identity)

    async def close_channels(self) -> None:
        """Closes the operator's channel to identity."""
        if self._identity is not None:
            await self._identity.close()
            self._identity = None

    async def enlist(self, provider_id: str) -> Ed25519PrivateKey:
        """Enlists and approves a text-only provider; returns its signing key."""
        key = Ed25519PrivateKey.generate()
        identity = self.identity()
        await identity.EnlistProvider(
            id_pb.EnlistProviderRequest(
                provider_id=provider_id,
                display_name=provider_id,
                signing_public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                identifier_kinds=[IdentifierKind.IDENTIFIER_KIND_USERNAME],
                features=[Feature.FEATURE_TEXT, Feature.FEATURE_RECEIPTS],
            ),
            metadata=self.admin,
        )
        await identity.ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider_id), metadata=self.admin)
        return key

    async def restart(self, name: str, *, kill: bool) -> None:
        """Stops a service process (SIGKILL when ``kill``, else SIGTERM and its drain) and starts it again."""
        service = self.services[name]
        await asyncio.to_thread(service.stop, kill=kill)
        await asyncio.to_thread(service.start, 60.0)
