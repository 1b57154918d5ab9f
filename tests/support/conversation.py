"""A cross-provider conversation through a deployed Parley (compose stack, launcher), every message counted.

It talks to the deployment only over its published gRPC ports, with the provider SDK, as an integrator would:
two providers are enlisted through identity's admin API, Ana (provider "gatekeeper") and Ben (provider "birdy")
register, opt in, publish keys and write to each other end-to-end encrypted, each through a relay address of its
own. Each device's inbox reconnects whenever its stream ends (a relay restart) and drops repeated message ids, as
the SDK's delivery promise asks of a client (at least once on the wire, exactly once as the user sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.common.v1.common_pb2 import Feature, IdentifierKind
from parley.content.v1 import content_pb2
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley_sdk import DeviceClient, ProviderBackend, RelayConnection, StreamClosedError
from parley_stanza import Address, Message

# How long one inbox waits for a relay to take its stream again before the conversation fails.
_RECONNECT_BUDGET_S = 90.0
# Sends refused as UNAVAILABLE (a relay restarting) are tried again this often, 0.2 s apart.
_SEND_ATTEMPTS = 100
# How long the messages sent so far may take to arrive (a relay restart included).
_DELIVERY_BUDGET_S = 90.0


@dataclass(frozen=True)
class Endpoints:
    """Where a deployment listens (``host:port`` or any gRPC target) and its admin token."""

    identity: str
    keydir: str
    admin_token: str


@dataclass
class Inbox:
    """A device's receiving side: a stream that comes back after every break, and what it read.

    Attributes:
        read: message ids decrypted, in arrival order (each once).
        redelivered: deliveries of ids already read (at least once on the wire), acknowledged and dropped.
        reconnects: streams opened after the first.
    """

    device: DeviceClient
    read: list[str] = field(default_factory=list)
    redelivered: int = 0
    reconnects: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _broken_since: float = 0.0

    async def run(self) -> None:
        """Receives until cancelled, reconnecting (within a bounded budget) whenever the stream ends."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self.device.connect() as connection:
                    await self._receive(connection)
            except (EOFError, StreamClosedError, grpc.aio.AioRpcError) as error:
                self.connected.clear()
                self._broken_since = self._broken_since or loop.time()
                if loop.time() - self._broken_since > _RECONNECT_BUDGET_S:
                    raise TimeoutError(f"{self.device.address}: no relay took the stream again") from error
                self.reconnects += 1
                # The relay may be draining or starting; a short pause keeps the retries from spinning.
                await asyncio.sleep(0.2)

    async def _receive(self, connection: RelayConnection) -> None:
        await connection.drained.wait()
        self._broken_since = 0.0
        self.connected.set()
        while True:
            incoming = await connection.receive()
            stanza = incoming.stanza
            if isinstance(stanza, Message):
                if stanza.id in self.read:
                    self.redelivered += 1
                else:
                    self.device.decrypt(stanza)
                    self.read.append(stanza.id)
                    self.changed.set()
            await connection.ack(incoming.delivery_id)

    async def wait_for(self, ids: list[str]) -> None:
        """Waits until every id in ``ids`` was read (the caller bounds the wait)."""
        while not set(ids) <= set(self.read):
            self.changed.clear()
            if not set(ids) <= set(self.read):
                await self.changed.wait()


@dataclass
class Tally:
    """What the conversation sent and what each side read."""

    sent_to_ben: list[str]
    sent_to_ana: list[str]
    ben: Inbox
    ana: Inbox


async def enlist(endpoints: Endpoints, provider_id: str) -> Ed25519PrivateKey:
    """Enlists and approves ``provider_id`` through identity's admin API; returns its signing key."""
    key = Ed25519PrivateKey.generate()
    admin = (("authorization", f"Bearer {endpoints.admin_token}"),)
    async with grpc.aio.insecure_channel(endpoints.identity) as channel:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        await identity.EnlistProvider(
            id_pb.EnlistProviderRequest(
                provider_id=provider_id,
                display_name=provider_id.title(),
                signing_public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                identifier_kinds=[IdentifierKind.IDENTIFIER_KIND_USERNAME],
                features=[Feature.FEATURE_TEXT, Feature.FEATURE_RECEIPTS],
            ),
            metadata=admin,
        )
        await identity.ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider_id), metadata=admin)
    return key


async def converse(
    endpoints: Endpoints,
    *,
    ana_relay: str,
    ben_relay: str,
    messages: int,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> Tally:
    """Ana and Ben write ``messages`` messages each; ``meanwhile`` runs while the second half of Ana's are sent.

    Ana's device uses ``ana_relay``, Ben's ``ben_relay``. Ben writes his second half after ``meanwhile`` returned
    (it restarts Ben's relay, say, and returns once the relay serves again).

    Returns:
        What was sent and read; the caller asserts on it.
    """
    keys = {provider: await enlist(endpoints, provider) for provider in ("gatekeeper", "birdy")}
    backends = {
        provider: ProviderBackend(
            provider, key, identity_target=endpoints.identity, keydir_target=endpoints.keydir, relay_target=relay
        )
        for (provider, key), relay in zip(keys.items(), (ana_relay, ben_relay), strict=True)
    }
    ana = await DeviceClient.register(
        backends["gatekeeper"], Address.for_user("gatekeeper", "username", "ana"), new_user=True
    )
    ben = await DeviceClient.register(backends["birdy"], Address.for_user("birdy", "username", "ben"), new_user=True)
    await ana.enable_third_party_chats(["birdy"])
    await ben.enable_third_party_chats(["gatekeeper"])
    for device in (ana, ben):
        await device.publish_keys(10)
    tally = Tally([], [], Inbox(ben), Inbox(ana))
    readers = [
        asyncio.create_task(inbox.run(), name=f"inbox-{inbox.device.address}") for inbox in (tally.ben, tally.ana)
    ]
    try:
        for inbox in (tally.ben, tally.ana):
            async with asyncio.timeout(30):
                await inbox.connected.wait()
        half = messages // 2
        for number in range(half):
            await _say(ana, ben, f"a{number}", tally.sent_to_ben)
            await _say(ben, ana, f"b{number}", tally.sent_to_ana)
        async with asyncio.timeout(_DELIVERY_BUDGET_S):
            await tally.ben.wait_for(tally.sent_to_ben)
            await tally.ana.wait_for(tally.sent_to_ana)

        side_task: asyncio.Task[None] | None = None
        if meanwhile is not None:
            side_task = asyncio.create_task(meanwhile())
        for number in range(half, messages):
            await _say(ana, ben, f"a{number}", tally.sent_to_ben)
        if side_task is not None:
            await side_task
        for number in range(half, messages):
            await _say(ben, ana, f"b{number}", tally.sent_to_ana)
        async with asyncio.timeout(_DELIVERY_BUDGET_S):
            await tally.ben.wait_for(tally.sent_to_ben)
            await tally.ana.wait_for(tally.sent_to_ana)
        for reader in readers:
            if reader.done():
                reader.result()  # an inbox that gave up fails the conversation with its own error
    finally:
        for reader in readers:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for backend in backends.values():
            await backend.close()
    return tally


async def _say(sender: DeviceClient, recipient: DeviceClient, message_id: str, sent: list[str]) -> None:
    content = content_pb2.Content(text=content_pb2.Text(body=f"message {message_id}"))
    # A channel whose relay just restarted may fail a call or two (UNAVAILABLE) before it reconnects. A client
    # sends again with the same message id: the relay stores it once and answers a repeat as a duplicate.
    for attempt in range(_SEND_ATTEMPTS):
        try:
            await sender.send_content(recipient.user, content, message_id=message_id)
            break
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == _SEND_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2)
    sent.append(message_id)
