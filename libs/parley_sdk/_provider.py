"""The provider side of an integration: the backend that holds the provider's signing key and acts for its users."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley.keydir.v1 import keydir_pb2_grpc
from parley.moderation.v1 import moderation_pb2_grpc
from parley.relay.v1 import relay_pb2_grpc
from parley_runtime.auth import DEVICE_METADATA, USER_METADATA, mint_assertion
from parley_sdk._providers import ProviderDirectory

Metadata = tuple[tuple[str, str], ...]

_log = logging.getLogger(__name__)

_SESSION_MARGIN_S = 30.0
"""A session is no longer presented this close to its expiry: room for clock skew and calls in flight."""
_SESSION_RETRY_S = 30.0
"""After a failed CreateSession, assertions carry the calls this long before the next attempt."""

# Client-side balancing: a target that resolves to several replicas (a headless Kubernetes Service's DNS name, or
# "ipv4:host:port,host:port" from `make up`) spreads calls and streams over all of them, and a replica that goes
# away is left out until it is back; gRPC's default (pick_first) would pin everything to the first address.
_BALANCED = [("grpc.lb_policy_name", "round_robin")]


class ProviderBackend:
    """A provider's connection to the gatekeeper's Parley deployment.

    Calls carry a provider session (docs/auth.md): one provider assertion signed with the enlisted Ed25519 key buys
    a short-lived session token from identity, which then authenticates every call, with the acting user and device
    beside it, at the cost of an HMAC on the servers. The session is renewed in the background when two thirds of
    its lifetime have passed; until one is held (at start, or when identity cannot make one) each call carries a
    fresh one-time assertion instead. With ``sessions=False`` every call does. The key never leaves the backend.

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
        sessions: authenticate steady traffic with provider sessions (else one assertion per call).
        clock: the Unix time; tests move it to exercise session renewal.
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
        sessions: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider_id = provider_id
        self._signing_key = signing_key
        self._audience = audience
        self._lifetime_s = assertion_lifetime_s
        self._credentials = channel_credentials
        self._sessions = sessions
        self._clock = clock
        self._session_token = ""
        self._session_renew_at = 0.0
        self._session_usable_until = 0.0
        self._session_retry_at = 0.0
        self._session_task: asyncio.Task[bool] | None = None
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
        """Call metadata acting for ``subject`` (a user address, or the provider id) and optionally a device: the
        session with the acting user and device when one is held, else a fresh assertion."""
        session = self._current_session()
        if session:
            metadata = [("authorization", f"Bearer {session}")]
            if subject != self.provider_id:
                metadata.append((USER_METADATA, subject))
            if device_id is not None:
                metadata.append((DEVICE_METADATA, str(device_id)))
            return tuple(metadata)
        return self._assertion(subject, device_id)

    async def start_session(self) -> bool:
        """Makes (or renews) the provider session now rather than in the background; True when one is held.

        Calls work without it (they carry assertions until the background renewal has a session); this is for a
        backend that wants its first calls on a session too.
        """
        if self._session_task is None or self._session_task.done():
            self._session_task = asyncio.get_running_loop().create_task(self._renew_session())
        return await asyncio.shield(self._session_task)

    def _current_session(self) -> str:
        """The session token to present, or "" (then an assertion); starts a renewal when one is due."""
        if not self._sessions:
            return ""
        now = self._clock()
        if now >= self._session_renew_at and now >= self._session_retry_at:
            self._renew_in_background()
        return self._session_token if now < self._session_usable_until else ""

    def _renew_in_background(self) -> None:
        if self._session_task is not None and not self._session_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # metadata built outside an event loop (no call can follow there either): assertions it is
        self._session_task = loop.create_task(self._renew_session())

    async def _renew_session(self) -> bool:
        started = self._clock()
        try:
            response = await self.identity.CreateSession(
                id_pb.CreateSessionRequest(), metadata=self._assertion(self.provider_id), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            # Sessions off at the gatekeeper, identity unreachable, the provider suspended: calls carry assertions,
            # which say what is wrong on each call, and the session is tried again later.
            _log.info("no provider session (%s: %s); calls carry assertions", exc.code().name, exc.details())
            self._session_retry_at = self._clock() + _SESSION_RETRY_S
            return False
        # The lifetime counted on this machine's clock from the request: skew between the two clocks cannot make the
        # backend present an expired session.
        lifetime = float(response.lifetime_s)
        self._session_token = response.session_token
        self._session_renew_at = started + lifetime * 2 / 3
        self._session_usable_until = started + lifetime - min(_SESSION_MARGIN_S, lifetime / 10)
        return True

    def _assertion(self, subject: str, device_id: int | None = None) -> Metadata:
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
        """Closes the channels (and stops a session renewal in progress)."""
        if self._session_task is not None:
            self._session_task.cancel()
        for channel in self._channels:
            await channel.close()
