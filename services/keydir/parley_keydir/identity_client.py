"""The key directory's view of identity, over gRPC with the internal token."""

from __future__ import annotations

import grpc.aio

from parley.identity.v1 import identity_pb2, identity_pb2_grpc
from parley_keydir.handler import RecipientView
from parley_stanza import Address


class IdentityRecipientResolver:
    """Implements ``RecipientResolver`` with identity's ``ResolveRecipient``.

    Args:
        channel: internal channel to identity.
        timeout_s: deadline of each call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = 2.0) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._timeout_s = timeout_s

    async def resolve(self, sender: Address, recipient: Address) -> RecipientView:
        """Reachability and device ids of ``recipient`` as seen by ``sender``."""
        response = await self._stub.ResolveRecipient(
            identity_pb2.ResolveRecipientRequest(sender=str(sender), recipient=str(recipient)),
            timeout=self._timeout_s,
        )
        return RecipientView(response.reachability, tuple(device.device_id for device in response.devices))
