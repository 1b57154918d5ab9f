"""The relay's view of moderation: CheckSendBatch over gRPC, or no moderation when none is configured."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio

from parley.common.v1.common_pb2 import ErrorReason
from parley.moderation.v1 import moderation_pb2, moderation_pb2_grpc
from parley_relay.handler import Send, SendDecision
from parley_runtime.errors import Code, ParleyError, dependency_unavailable

_CODE_BY_REASON = {
    ErrorReason.ERROR_REASON_RATE_LIMITED: Code.RESOURCE_EXHAUSTED,
    ErrorReason.ERROR_REASON_PROVIDER_THROTTLED: Code.RESOURCE_EXHAUSTED,
    ErrorReason.ERROR_REASON_QUOTA_EXCEEDED: Code.RESOURCE_EXHAUSTED,
    ErrorReason.ERROR_REASON_USER_NOT_FOUND: Code.NOT_FOUND,
    ErrorReason.ERROR_REASON_CONSENT_MISSING: Code.FAILED_PRECONDITION,
    ErrorReason.ERROR_REASON_READ_ONLY_CHAT: Code.FAILED_PRECONDITION,
}
_MAX_CHECKS = 1000
"""Moderation's default bound on checks per CheckSendBatch; larger runs are split."""

_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ModerationPolicy:
    """Implements ``SendPolicy`` with moderation's ``CheckSendBatch``: one call per run of messages.

    Args:
        channel: internal channel to moderation.
        timeout_s: deadline of each call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = 2.0) -> None:
        self._stub = moderation_pb2_grpc.ModerationServiceStub(channel)
        self._timeout_s = timeout_s

    async def check_many(self, sends: Sequence[Send]) -> list[SendDecision | ParleyError]:
        """Moderation's decisions, in order; REFUSE verdicts become the matching ``ParleyError``.

        Raises:
            ParleyError: UNAVAILABLE / DEPENDENCY_UNAVAILABLE when moderation cannot be reached in time, so every
                stanza of the frame is refused as retryable and the stream stays up.
        """
        decisions: list[SendDecision | ParleyError] = []
        for start in range(0, len(sends), _MAX_CHECKS):
            request = moderation_pb2.CheckSendBatchRequest(
                checks=[
                    moderation_pb2.CheckSendRequest(
                        sender=str(send.sender), recipient=str(send.recipient), fan_out=send.fan_out
                    )
                    for send in sends[start : start + _MAX_CHECKS]
                ]
            )
            try:
                response = await self._stub.CheckSendBatch(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _UNAVAILABLE:
                    raise
                raise dependency_unavailable("moderation is unavailable; retry") from None
            decisions.extend(_decision(answer) for answer in response.decisions)
        return decisions


def _decision(response: moderation_pb2.CheckSendResponse) -> SendDecision | ParleyError:
    if response.verdict == moderation_pb2.VERDICT_ALLOW:
        return SendDecision(deliver=True)
    if response.verdict == moderation_pb2.VERDICT_DROP_SILENTLY:
        return SendDecision(deliver=False)
    reason = response.reason or ErrorReason.ERROR_REASON_INTERNAL
    metadata: dict[str, str | int] = {}
    if response.retry_after_ms:
        metadata["retry_after_ms"] = response.retry_after_ms
    if response.limit:
        metadata["limit"] = response.limit
    return ParleyError(
        _CODE_BY_REASON.get(reason, Code.PERMISSION_DENIED), reason, "moderation refused the send", **metadata
    )


class NoModeration:
    """``SendPolicy`` for deployments without a moderation service: every send is delivered.

    Provider suspension still applies (authentication refuses suspended providers), and consent is identity's.
    """

    async def check_many(self, sends: Sequence[Send]) -> list[SendDecision | ParleyError]:
        """Always deliver."""
        return [SendDecision(deliver=True)] * len(sends)
