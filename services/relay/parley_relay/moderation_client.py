"""The relay's view of moderation: CheckSend over gRPC, or no moderation when none is configured."""

from __future__ import annotations

import grpc.aio

from parley.common.v1.common_pb2 import ErrorReason
from parley.moderation.v1 import moderation_pb2, moderation_pb2_grpc
from parley_relay.handler import SendDecision
from parley_runtime.errors import Code, ParleyError
from parley_stanza import Address

_CODE_BY_REASON = {
    ErrorReason.ERROR_REASON_RATE_LIMITED: Code.RESOURCE_EXHAUSTED,
    ErrorReason.ERROR_REASON_PROVIDER_THROTTLED: Code.RESOURCE_EXHAUSTED,
    ErrorReason.ERROR_REASON_QUOTA_EXCEEDED: Code.RESOURCE_EXHAUSTED,
    ErrorReason.ERROR_REASON_USER_NOT_FOUND: Code.NOT_FOUND,
    ErrorReason.ERROR_REASON_CONSENT_MISSING: Code.FAILED_PRECONDITION,
    ErrorReason.ERROR_REASON_READ_ONLY_CHAT: Code.FAILED_PRECONDITION,
}


class ModerationPolicy:
    """Implements ``SendPolicy`` with moderation's ``CheckSend``.

    Args:
        channel: internal channel to moderation.
        timeout_s: deadline of each call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = 2.0) -> None:
        self._stub = moderation_pb2_grpc.ModerationServiceStub(channel)
        self._timeout_s = timeout_s

    async def check(self, sender: Address, recipient: Address, fan_out: int) -> SendDecision:
        """Moderation's decision; REFUSE verdicts become the matching ``ParleyError``."""
        response = await self._stub.CheckSend(
            moderation_pb2.CheckSendRequest(sender=str(sender), recipient=str(recipient), fan_out=fan_out),
            timeout=self._timeout_s,
        )
        if response.verdict == moderation_pb2.VERDICT_ALLOW:
            return SendDecision(deliver=True)
        if response.verdict == moderation_pb2.VERDICT_DROP_SILENTLY:
            return SendDecision(deliver=False)
        reason = response.reason or ErrorReason.ERROR_REASON_INTERNAL
        metadata = {"retry_after_ms": response.retry_after_ms} if response.retry_after_ms else {}
        raise ParleyError(
            _CODE_BY_REASON.get(reason, Code.PERMISSION_DENIED), reason, "moderation refused the send", **metadata
        )


class NoModeration:
    """``SendPolicy`` for deployments without a moderation service: every send is delivered.

    Provider suspension still applies (authentication refuses suspended providers), and consent is identity's.
    """

    async def check(self, sender: Address, recipient: Address, fan_out: int) -> SendDecision:
        """Always deliver."""
        return SendDecision(deliver=True)
