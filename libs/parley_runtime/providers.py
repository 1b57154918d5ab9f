"""Local, push-updated views of the enlisted providers, for authentication and routing in every service.

Providers change rarely but a suspension must take effect everywhere within one second, and authentication runs
on every call, so each process keeps the providers in memory and has changes pushed to it: identity replicas by
Redis pub/sub (see the identity service), every other service by identity's ``WatchProviders`` stream
(:class:`WatchedProviderDirectory`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence

import grpc
import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from parley.identity.v1 import identity_pb2, identity_pb2_grpc
from parley.identity.v1.identity_pb2 import Provider
from parley_runtime import redis_keys
from parley_runtime.auth import ProviderRecord, certificate_sha256
from parley_runtime.background import cancel_and_wait
from parley_runtime.batching import Coalescer
from parley_runtime.clients import internal_channel, peer_tls
from parley_runtime.config import IdentityPeerSettings
from parley_runtime.interop_policy import Policy
from parley_runtime.redis_client import Redis
from parley_runtime.telemetry import Telemetry

_log = logging.getLogger(__name__)


def record_from_proto(provider: Provider) -> ProviderRecord:
    """The authentication view of a ``parley.identity.v1.Provider``."""
    return ProviderRecord(
        provider_id=provider.provider_id,
        status=provider.status,
        signing_key=Ed25519PublicKey.from_public_bytes(provider.signing_public_key),
        features=frozenset(provider.features),
        display_name=provider.display_name,
        identifier_kinds=frozenset(provider.identifier_kinds),
        client_cert_sha256=_pin(provider.mtls_client_cert_pem),
        edit_window_s=provider.edit_window_s,
        delete_window_s=provider.delete_window_s,
        interop_policy=Policy.from_proto(provider.interop_policy),
    )


def _pin(pem: str) -> bytes:
    """What mTLS pinning compares for an enlisted certificate (nothing when none was enlisted)."""
    if not pem:
        return b""
    try:
        return certificate_sha256(pem.encode())
    except ValueError:
        # Identity checks certificates at enlistment; one that still does not parse must match nothing.
        return b"unparseable"


class ProviderCache:
    """Providers by id, in memory; implements ``parley_runtime.auth.ProviderDirectory``."""

    def __init__(self) -> None:
        self._records: dict[str, ProviderRecord] = {}
        self._listeners: list[Callable[[str | None], None]] = []

    def on_change(self, listener: Callable[[str | None], None]) -> None:
        """Calls ``listener`` after every change, e.g. to re-check open streams: with the provider's id when one
        provider changed, with None after a whole snapshot."""
        self._listeners.append(listener)

    def _changed(self, provider_id: str | None) -> None:
        for listener in self._listeners:
            listener(provider_id)

    def get(self, provider_id: str) -> ProviderRecord | None:
        """The provider, or None."""
        return self._records.get(provider_id)

    def all(self) -> list[ProviderRecord]:
        """Every provider, ordered by id."""
        return [self._records[key] for key in sorted(self._records)]

    def replace_all(self, providers: Iterable[Provider]) -> None:
        """Replaces the whole cache (a snapshot)."""
        self._records = {p.provider_id: record_from_proto(p) for p in providers}
        self._changed(None)

    def put(self, provider: Provider) -> None:
        """Inserts or replaces one provider."""
        self._records[provider.provider_id] = record_from_proto(provider)
        self._changed(provider.provider_id)


class WatchedProviderDirectory(ProviderCache):
    """A :class:`ProviderCache` kept current by identity's ``WatchProviders`` stream, reconnecting with backoff.

    Args:
        channel: channel to the identity service (carrying the internal token).
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__()
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts following the stream in the background."""
        self._task = asyncio.create_task(self._follow(), name="watch-providers")

    async def wait_ready(self) -> None:
        """Waits for the first snapshot (callers bound the wait with ``asyncio.timeout``)."""
        await self._ready.wait()

    async def stop(self) -> None:
        """Stops following."""
        await cancel_and_wait([self._task])

    async def _follow(self) -> None:
        backoff = 0.05
        while True:
            try:
                async for update in self._stub.WatchProviders(identity_pb2.WatchProvidersRequest()):
                    if update.snapshot:
                        self.replace_all(update.providers)
                        self._ready.set()
                    else:
                        for provider in update.providers:
                            self.put(provider)
                    backoff = 0.05
            except grpc.aio.AioRpcError as exc:
                _log.warning("provider watch interrupted: %s; retrying in %.2f s", exc.code(), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


async def follow_identity(
    settings: IdentityPeerSettings, telemetry: Telemetry
) -> tuple[grpc.aio.Channel, WatchedProviderDirectory]:
    """Opens the internal channel to identity and waits for its first provider snapshot.

    Waiting at start means a new replica never refuses valid callers for want of a provider list.

    Returns:
        The channel (for the service's other identity calls) and the directory following the providers.

    Raises:
        TimeoutError: identity did not answer within ``settings.startup_timeout_s``.
    """
    channel = internal_channel(
        settings.identity_target,
        internal_token=settings.internal_token.get_secret_value(),
        telemetry=telemetry,
        tls=peer_tls(settings),
    )
    directory = WatchedProviderDirectory(channel)
    directory.start()
    try:
        async with asyncio.timeout(settings.startup_timeout_s):
            await directory.wait_ready()
    except BaseException:
        # A service that cannot start must not leave a watch retrying against identity behind it.
        await directory.stop()
        await channel.close()
        raise
    return channel, directory


class RedisReplayGuard:
    """Marks used assertion ids in Redis until they expire; implements ``parley_runtime.auth.ReplayGuard``.

    Every call with an assertion records its id before anything else happens, so under load many calls record at
    once: the records asked for while one round trip is in flight go together in the next, one pipeline for all
    (:class:`parley_runtime.batching.Coalescer`); each call still gets its own verdict. A call alone pays one command.
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._records = Coalescer(self._record_wave, name="replay-guard")

    async def first_use(self, provider_id: str, jti: str, expires_at: float) -> bool:
        """True when ``jti`` had not been used before (and records it until ``expires_at``)."""
        # The key outlives the assertion by a minute so clock skew cannot reopen a window for replay.
        expire_ms = int(expires_at * 1000) + 60_000
        # The client retries a command (or a whole pipeline) whose connection dropped, so this SET may run twice for
        # one call; each call writes its own nonce and reads back what was there, and finding its own nonce is still
        # its first use.
        nonce = secrets.token_bytes(8)
        before = await self._records.submit((redis_keys.assertion_id(provider_id, jti), nonce, expire_ms))
        return before is None or before == nonce

    async def _record_wave(self, records: Sequence[tuple[str, bytes, int]]) -> list[bytes | BaseException | None]:
        """SET NX GET of each (key, nonce, expiry) in one round trip; per record what was there before, or the error
        of its command."""
        if len(records) == 1:
            key, nonce, expire_ms = records[0]
            # With get=True, SET answers what the key held before: bytes, or None.
            before = await self._client.set(key, nonce, nx=True, pxat=expire_ms, get=True)
            return [before if isinstance(before, bytes) else None]
        async with self._client.pipeline(transaction=False) as pipe:
            for key, nonce, expire_ms in records:
                pipe.set(key, nonce, nx=True, pxat=expire_ms, get=True)
            replies: list[bytes | BaseException | None] = await pipe.execute(raise_on_error=False)
        return replies
