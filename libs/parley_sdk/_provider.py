"""The provider side of an integration: the backend that holds the provider's signing key and acts for its users."""

from __future__ import annotations

import grpc
import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.identity.v1 import identity_pb2_grpc
from parley.keydir.v1 import keydir_pb2_grpc
from parley.moderation.v1 import moderation_pb2_grpc
from parley.relay.v1 import relay_pb2_grpc
from parley_runtime.auth import mint_assertion
from parley_sdk._providers import ProviderDirectory

Metadata = tuple[tuple[str, str], ...]

# Client-side balancing: a target that resolves to several replicas (a headless Kubernetes Service's DNS name, or
# "ipv4:host:port,host:port" from `make up`) spreads calls and streams over all of them, and a replica that goes
# away is left out until it is back; gRPC's default (pick_first) would pin everything to the first address.
_BALANCED = [("grpc.lb_policy_name", "round_robin")]


class ProviderBackend:
    """A provider's connection to the gatekeeper's Parley deployment.

    Every call it makes carries a fresh one-time assertion signed with the provider's enlisted Ed25519 key
    (see docs/auth.md), so the key never leaves the provider's backend.

    Args:
        provider_id: the provider's enlisted id.
        signing_key: the provider's Ed25519 private key.
        identity_target: ``host:port`` of the identity service.
        keydir_target: ``host:port`` of the key directory.
        relay_target: ``host:port`` of the relay, when the backend sends and receives messages; a target naming
            several replicas (``dns:///relay.parley.svc:7100`` of a headless Service, ``ipv4:a:7100,b:7100``)
            is balanced round-robin.
        moderation_target: ``host:port`` of moderation, when the backend's users report messages.
        audience: the gatekeeper's audience (``PARLEY_AUDIENCE`` of the services).
        assertion_lifetime_s: lifetime of each assertion.
        channel_credentials: TLS for every channel, e.g. ``grpc.ssl_channel_credentials()`` (the system's roots)
            or with a private CA and, for mTLS, the provider's client certificate; None for plaintext (local
            development, or a sidecar that adds TLS).
    """

    def __init__(
        self,
        provider_id: str,
        signing_key: Ed25519PrivateKey,
        *,
        identity_target: str,
        keydir_target: str,
        relay_target: str | None = None,
        moderation_target: str | None = None,
        audience: str = "parley",
        assertion_lifetime_s: int = 60,
        channel_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.provider_id = provider_id
        self._signing_key = signing_key
        self._audience = audience
        self._lifetime_s = assertion_lifetime_s
        self._credentials = channel_credentials
        self._channels = [self._channel(identity_target), self._channel(keydir_target)]
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._channels[0])
        self.keydir = keydir_pb2_grpc.KeyDirectoryServiceStub(self._channels[1])
        self.relay: relay_pb2_grpc.RelayServiceStub | None = None
        if relay_target is not None:
            self._channels.append(self._channel(relay_target))
            self.relay = relay_pb2_grpc.RelayServiceStub(self._channels[-1])
        self.moderation: moderation_pb2_grpc.ModerationServiceStub | None = None
        if moderation_target is not None:
            self._channels.append(self._channel(moderation_target))
            self.moderation = moderation_pb2_grpc.ModerationServiceStub(self._channels[-1])
        self.providers = ProviderDirectory(self.identity, self.credentials)
        """What each provider's clients can display (for capability downgrade); shared by the backend's devices."""

    def _channel(self, target: str) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=_BALANCED)
        return grpc.aio.secure_channel(target, self._credentials, options=_BALANCED)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key the gatekeeper enlists."""
        return self._signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def credentials(self, subject: str, device_id: int | None = None) -> Metadata:
        """Call metadata acting for ``subject`` (a user address, or the provider id) and optionally a device."""
        token = mint_assertion(
            self._signing_key,
            provider_id=self.provider_id,
            subject=subject,
            device_id=device_id,
            audience=self._audience,
            lifetime_s=self._lifetime_s,
        )
        return (("authorization", f"Bearer {token}"),)

    async def close(self) -> None:
        """Closes the channels."""
        for channel in self._channels:
            await channel.close()
