"""The relay's view of moderation: CheckSendBatch over gRPC, or no moderation when none is configured.

Checks asked for while a call is in flight wait and go together in the next call, so concurrent unary ``Send``
calls and frames of different streams share moderation round trips (one call's gRPC cost, on both sides, for
many decisions) instead of paying one each. Each caller's sends stay in their order within the combined call.
"""

from __future__ import annotations

import asyncio
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


_Decisions = list["SendDecision | ParleyError"]


class ModerationPolicy:
    """Implements ``SendPolicy`` with moderation's ``CheckSendBatch``, combining concurrent callers' checks.

    Args:
        channel: internal channel to moderation.
        timeout_s: deadline of each call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = 2.0) -> None:
        self._stub = moderation_pb2_grpc.ModerationServiceStub(channel)
        self._timeout_s = timeout_s
        self._waiting: list[tuple[Sequence[Send], asyncio.Future[_Decisions]]] = []
        self._caller: asyncio.Task[None] | None = None

    async def check_many(self, sends: Sequence[Send]) -> list[SendDecision | ParleyError]:
        """Moderation's decisions, in order; REFUSE verdicts become the matching ``ParleyError``.

        Raises:
            ParleyError: UNAVAILABLE / DEPENDENCY_UNAVAILABLE when moderation cannot be reached in time, so every
                stanza of the frame is refused as retryable and the stream stays up.
        """
        if not sends:
            return []
        future: asyncio.Future[_Decisions] = asyncio.get_running_loop().create_future()
        self._waiting.append((sends, future))
        if self._caller is None:
            # A task of its own rather than the first caller's: a caller cancelled (its stream closed) must not
            # cancel the others' decisions with it.
            self._caller = asyncio.create_task(self._call_while_waiting(), name="moderation-checks")
        return await future

    async def _call_while_waiting(self) -> None:
        waiting: list[tuple[Sequence[Send], asyncio.Future[_Decisions]]] = []
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                try:
                    decisions = await self._decide([send for sends, _ in waiting for send in sends])
                except Exception as error:  # each caller gets what the combined call met
                    _fail(waiting, error)
                    continue
                start = 0
                for sends, future in waiting:
                    if not future.done():
                        future.set_result(decisions[start : start + len(sends)])
                    start += len(sends)
        except asyncio.CancelledError:
            # The relay is stopping: nobody may wait forever for a decision.
            _fail([*waiting, *self._waiting], dependency_unavailable("the relay is stopping; retry"))
            self._waiting = []
            raise
        finally:
            self._caller = None

    async def _decide(self, sends: Sequence[Send]) -> _Decisions:
        decisions: _Decisions = []
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


def _fail(waiting: Sequence[tuple[Sequence[Send], asyncio.Future[_Decisions]]], error: Exception) -> None:
    for _, future in waiting:
        if not future.done():
            future.set_exception(error)


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
