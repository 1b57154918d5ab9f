"""A local Parley cluster for tests: real services on free ports sharing one real Redis.

Services run in the test's event loop (they are the same code ``python -m parley_<service>`` runs), so tests can
stop, restart and inspect them; clients reach them over real gRPC on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from parley.common.v1.common_pb2 import Feature, IdentifierKind
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley.keydir.v1 import keydir_pb2_grpc
from parley_identity.app import IdentitySettings, build_identity
from parley_keydir.app import KeyDirectorySettings, build_keydir
from parley_runtime.auth import mint_assertion
from parley_runtime.config import SettingsT, load_settings
from parley_runtime.credentials import SERVICES, peers_line
from parley_runtime.server import GrpcServer
from parley_runtime.telemetry import Telemetry

ADMIN_TOKEN = "test-admin-token"
CREDENTIALS = {service: f"{service}:test-credential-of-the-{service}" for service in SERVICES}
"""Each service's credential in test clusters; every service accepts all of them as peers."""
INTERNAL_TOKEN = CREDENTIALS["relay"]
"""The credential tests call internal RPCs with: the relay's, which every internal RPC of a test serves."""
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
SESSION_KEY = base64.b64encode(hashlib.sha256(b"parley tests: the provider-session key").digest()).decode()
"""The provider-session key (``PARLEY_SESSION_KEY``) every service of a test cluster shares."""
INTERNAL = (("authorization", f"Bearer {INTERNAL_TOKEN}"),)

ALL_FEATURES = [value for value in Feature.values() if value != Feature.FEATURE_UNSPECIFIED]
ALL_KINDS = [
    IdentifierKind.IDENTIFIER_KIND_PHONE,
    IdentifierKind.IDENTIFIER_KIND_USERNAME,
    IdentifierKind.IDENTIFIER_KIND_EMAIL,
]


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ``ErrorInfo.reason`` a failed call carried (fails the test if it carried none)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "parley.dev"
            return info.reason
    raise AssertionError("status carried no ErrorInfo")


@dataclass
class ProviderKeys:
    """An enlisted provider's id and signing key; mints one-time assertions."""

    provider_id: str
    signing_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_key(self) -> bytes:
        """Raw 32-byte public key."""
        return self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def auth(self, subject: str, device_id: int | None = None, **kwargs: object) -> tuple[tuple[str, str], ...]:
        """Call metadata with a fresh assertion for ``subject`` (and ``device_id``)."""
        token = mint_assertion(
            self.signing_key,
            provider_id=self.provider_id,
            subject=subject,
            device_id=device_id,
            **kwargs,
        )
        return (("authorization", f"Bearer {token}"),)


class Cluster:
    """Services of one test, on one Redis.

    Args:
        redis_url: the test's Redis.
        telemetry: the process's telemetry.
        redis_cluster: ``redis_url`` names a node of a Redis Cluster (services get ``PARLEY_REDIS_CLUSTER``).
    """

    def __init__(self, redis_url: str, telemetry: Telemetry, *, redis_cluster: bool = False) -> None:
        self.redis_url = redis_url
        self.redis_cluster = redis_cluster
        self.telemetry = telemetry
        self.servers: dict[str, GrpcServer] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _common(self, name: str) -> dict[str, object]:
        # Replicas ("relay-1") present their service's credential.
        service = name.split("-", maxsplit=1)[0]
        return {
            "port": 0,
            "redis_url": self.redis_url,
            "redis_cluster": self.redis_cluster,
            "admin_token": ADMIN_TOKEN,
            "internal_token": CREDENTIALS.get(service, INTERNAL_TOKEN),
            "internal_peers": peers_line(CREDENTIALS),
            "session_key": SESSION_KEY,
            "shutdown_grace_s": 1.0,
        }

    async def start(
        self,
        name: str,
        settings_class: type[SettingsT],
        build: Callable[[SettingsT, Telemetry], Awaitable[GrpcServer]],
        **overrides: object,
    ) -> str:
        """Starts any service from its settings class and ``build`` function, registered under ``name``.

        Settings get the cluster's Redis, tokens, port 0 and ``identity_target`` (when the class has it and
        identity runs), then ``overrides``.

        Returns:
            The service's ``host:port``.
        """
        common = self._common(name)
        if "identity_target" in settings_class.model_fields and "identity" in self.servers:
            common["identity_target"] = self.target("identity")
        settings = load_settings(settings_class, **{**common, **overrides})
        server = await build(settings, self.telemetry)
        await server.start()
        self.servers[name] = server
        return f"127.0.0.1:{server.port}"

    async def start_identity(self, **overrides: object) -> str:
        """Starts an identity server (the first is "identity", later ones "identity-<n>"); returns its target."""
        name = "identity" if "identity" not in self.servers else f"identity-{len(self.servers)}"
        return await self.start(name, IdentitySettings, build_identity, **overrides)

    async def start_keydir(self, **overrides: object) -> str:
        """Starts a key directory wired to the first identity server; returns its target."""
        return await self.start("keydir", KeyDirectorySettings, build_keydir, **overrides)

    def keydir(self) -> keydir_pb2_grpc.KeyDirectoryServiceStub:
        """A key-directory client stub."""
        return keydir_pb2_grpc.KeyDirectoryServiceStub(self.channel("keydir"))

    def target(self, name: str) -> str:
        """``host:port`` of a started service."""
        return f"127.0.0.1:{self.servers[name].port}"

    def channel(self, name: str) -> grpc.aio.Channel:
        """A plain client channel to a started service (callers pass their own credentials)."""
        channel = grpc.aio.insecure_channel(self.target(name))
        self._channels.append(channel)
        return channel

    def identity(self, name: str = "identity") -> identity_pb2_grpc.IdentityServiceStub:
        """An identity client stub."""
        return identity_pb2_grpc.IdentityServiceStub(self.channel(name))

    async def enlist(
        self,
        provider_id: str,
        *,
        features: Sequence[int] = ALL_FEATURES,
        kinds: Sequence[int] = ALL_KINDS,
        approve: bool = True,
    ) -> ProviderKeys:
        """Enlists (and approves) a provider through the admin API."""
        keys = ProviderKeys(provider_id)
        identity = self.identity()
        await identity.EnlistProvider(
            id_pb.EnlistProviderRequest(
                provider_id=provider_id,
                display_name=provider_id.title(),
                signing_public_key=keys.public_key,
                identifier_kinds=kinds,
                features=features,
            ),
            metadata=ADMIN,
        )
        if approve:
            await identity.ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider_id), metadata=ADMIN)
        return keys

    async def register_user(
        self,
        keys: ProviderKeys,
        user: str,
        *,
        devices: int = 1,
        allow: Sequence[str] | None = None,
    ) -> list[str]:
        """Registers ``user`` with ``devices`` devices; with ``allow``, enables consent for those providers.

        Returns:
            The device addresses.
        """
        identity = self.identity()
        await identity.RegisterUser(id_pb.RegisterUserRequest(), metadata=keys.auth(user))
        addresses = []
        for index in range(devices):
            response = await identity.RegisterDevice(
                id_pb.RegisterDeviceRequest(registration_id=100 + index), metadata=keys.auth(user)
            )
            addresses.append(response.address)
        if allow is not None:
            await identity.EnableThirdPartyChats(
                id_pb.EnableThirdPartyChatsRequest(allowed_providers=allow), metadata=keys.auth(user)
            )
        return addresses

    async def close(self) -> None:
        """Closes channels and stops every server."""
        for channel in self._channels:
            with contextlib.suppress(Exception):
                await channel.close()
        for server in self.servers.values():
            await server.stop(0)
        self.servers.clear()
