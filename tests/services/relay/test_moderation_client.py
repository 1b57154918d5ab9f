"""The relay's moderation client combines the checks of concurrent callers into one ``CheckSendBatch`` call.

While a call is in flight, later callers wait and go together in the next call; each gets exactly its own
decisions, in its order, or the error the combined call met.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from parley.common.v1.common_pb2 import ErrorReason
from parley.moderation.v1 import moderation_pb2
from parley_relay.handler import Send, SendDecision
from parley_relay.moderation_client import ModerationPolicy
from parley_runtime.errors import ParleyError
from parley_stanza import Address

SENDER = Address.parse("username:ana@birdy/1")


class _Moderation:
    """A CheckSendBatch that holds each call until the test lets it answer: drops sends to users named "mute*"."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.unavailable = False
        self.called = asyncio.Event()

    async def CheckSendBatch(
        self, request: moderation_pb2.CheckSendBatchRequest, **options: object
    ) -> moderation_pb2.CheckSendBatchResponse:
        self.calls.append([check.recipient for check in request.checks])
        self.called.set()
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.unavailable:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        return moderation_pb2.CheckSendBatchResponse(
            decisions=[
                moderation_pb2.CheckSendResponse(
                    verdict=moderation_pb2.VERDICT_DROP_SILENTLY
                    if check.recipient.startswith("username:mute")
                    else moderation_pb2.VERDICT_ALLOW
                )
                for check in request.checks
            ]
        )


def _policy(moderation: _Moderation) -> ModerationPolicy:
    policy = ModerationPolicy(grpc.aio.insecure_channel("127.0.0.1:1"))
    policy._stub = moderation  # type: ignore[assignment]
    return policy


def _sends(*names: str) -> list[Send]:
    return [Send(SENDER, Address.parse(f"username:{name}@gatekeeper"), 1) for name in names]


async def _until_calls(moderation: _Moderation, count: int) -> None:
    while len(moderation.calls) < count:
        moderation.called.clear()
        await moderation.called.wait()


@pytest.mark.timeout(10)
async def test_callers_waiting_on_a_call_share_the_next_one_and_each_gets_its_own_decisions() -> None:
    moderation = _Moderation()
    policy = _policy(moderation)
    first = asyncio.create_task(policy.check_many(_sends("a1", "mute1", "a2")))
    await _until_calls(moderation, 1)
    second = asyncio.create_task(policy.check_many(_sends("mute2", "b1")))
    third = asyncio.create_task(policy.check_many(_sends("c1")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(moderation.calls) == 1  # the later callers wait for the call in flight
    moderation.gates[0].set()
    assert await first == [SendDecision(True), SendDecision(False), SendDecision(True)]
    await _until_calls(moderation, 2)
    assert moderation.calls[1] == [
        "username:mute2@gatekeeper",
        "username:b1@gatekeeper",
        "username:c1@gatekeeper",
    ]
    moderation.gates[1].set()
    assert await second == [SendDecision(False), SendDecision(True)]
    assert await third == [SendDecision(True)]
    assert len(moderation.calls) == 2


@pytest.mark.timeout(10)
async def test_every_caller_of_a_failed_call_is_refused_as_retryable_and_the_next_call_goes_on() -> None:
    moderation = _Moderation()
    policy = _policy(moderation)
    moderation.unavailable = True
    first = asyncio.create_task(policy.check_many(_sends("a1")))
    await _until_calls(moderation, 1)
    second = asyncio.create_task(policy.check_many(_sends("b1")))
    moderation.gates[0].set()
    await _until_calls(moderation, 2)
    moderation.gates[1].set()
    for task in (first, second):
        with pytest.raises(ParleyError) as refused:
            await task
        assert refused.value.reason == ErrorReason.ERROR_REASON_DEPENDENCY_UNAVAILABLE
    moderation.unavailable = False
    later = asyncio.create_task(policy.check_many(_sends("c1")))
    await _until_calls(moderation, 3)
    moderation.gates[2].set()
    assert await later == [SendDecision(True)]


@pytest.mark.timeout(10)
async def test_a_cancelled_caller_leaves_the_others_decisions_alone() -> None:
    moderation = _Moderation()
    policy = _policy(moderation)
    first = asyncio.create_task(policy.check_many(_sends("a1")))
    await _until_calls(moderation, 1)
    second = asyncio.create_task(policy.check_many(_sends("b1")))
    await asyncio.sleep(0)
    first.cancel()
    moderation.gates[0].set()
    await _until_calls(moderation, 2)
    moderation.gates[1].set()
    assert await second == [SendDecision(True)]
    assert first.cancelled()
