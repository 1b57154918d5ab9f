"""The notification service's view of identity's devices, over gRPC with the internal token."""

from __future__ import annotations

import grpc.aio

from parley.identity.v1 import identity_pb2, identity_pb2_grpc
from parley.identity.v1.identity_pb2 import Reachability
from parley_notification.handler import DeviceStatus
from parley_stanza import Address


class IdentityDeviceRegistry:
    """Implements ``handler.DeviceRegistry`` with identity's internal ``ResolveRecipient``.

    The device asks about its own user: identity answers a provider's lookup of its own user without the consent
    rules, with the user's devices when the user exists, so the answer tells a missing user from a missing device.

    Args:
        channel: internal channel to identity.
        timeout_s: deadline of each call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = 2.0) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._timeout_s = timeout_s

    async def device_status(self, device: Address) -> DeviceStatus:
        """Whether identity knows ``device`` (an address with a device part).

        Raises:
            grpc.aio.AioRpcError: identity failed or did not answer in time.
        """
        response = await self._stub.ResolveRecipient(
            identity_pb2.ResolveRecipientRequest(sender=str(device), recipient=str(device.user)),
            timeout=self._timeout_s,
        )
        if response.reachability == Reachability.REACHABILITY_REACHABLE:
            registered = any(known.device_id == device.device for known in response.devices)
            return DeviceStatus.REGISTERED if registered else DeviceStatus.DEVICE_NOT_FOUND
        if response.reachability == Reachability.REACHABILITY_NOT_FOUND:
            return DeviceStatus.USER_NOT_FOUND
        # Identity checks the user's provider first and answers PROVIDER_UNAVAILABLE while it is not approved;
        # for one's own user nothing else is possible, so any other answer too means it does not vouch for it.
        return DeviceStatus.PROVIDER_UNAVAILABLE
