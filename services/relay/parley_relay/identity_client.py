"""The relay's view of identity: ResolveRecipient over gRPC, with a short-lived cache.

Every send needs the recipient's reachability and device list, and conversations send many stanzas to the same
recipient in a row; a cache of ``ttl_s`` (default one second) takes identity off most sends. The price is that a
consent change or a new device takes up to ``ttl_s`` to show here; a stale device list is caught anyway, because
the sender's client learns the new device from the STALE_DEVICES answer or on its next attempt.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import grpc.aio

from parley.identity.v1 import identity_pb2, identity_pb2_grpc
from parley_relay.handler import Recipient
from parley_stanza import Address, AddressKind

_MAX_ENTRIES = 100_000


class CachingRecipientResolver:
    """Implements ``RecipientResolver`` with identity's ``ResolveRecipient`` and a bounded TTL cache.

    Args:
        channel: internal channel to identity.
        ttl_s: how long an answer is reused; 0 disables the cache.
        timeout_s: deadline of each call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, ttl_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._cache: OrderedDict[tuple[AddressKind, str, str, Address], tuple[float, Recipient]] = OrderedDict()

    async def resolve(self, sender: Address, recipient: Address) -> Recipient:
        """Reachability and device ids of ``recipient`` as seen by ``sender``'s user."""
        # The sender's user by its parts: ``sender.user`` would build and validate a new Address on every send.
        key = (sender.kind, sender.identifier, sender.provider, recipient)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        response = await self._stub.ResolveRecipient(
            identity_pb2.ResolveRecipientRequest(sender=str(sender), recipient=str(recipient)),
            timeout=self._timeout_s,
        )
        answer = Recipient(response.reachability, tuple(device.device_id for device in response.devices))
        if self._ttl_s > 0:
            self._cache[key] = (now + self._ttl_s, answer)
            self._cache.move_to_end(key)
            while len(self._cache) > _MAX_ENTRIES:
                self._cache.popitem(last=False)
        return answer
