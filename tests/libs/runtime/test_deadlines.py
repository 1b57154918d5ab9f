"""Calls a service makes on behalf of a call it serves end no later than that call (issue 10, item 7)."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from support.probe import PROBE_SERVICE, ProbeFactory

from parley_runtime.clients import internal_channel
from parley_runtime.deadlines import bounded_timeout, call_deadline
from parley_runtime.telemetry import Telemetry


def test_a_timeout_is_shortened_to_what_is_left_of_the_served_call() -> None:
    with call_deadline(None):
        assert bounded_timeout(2.0) == 2.0
        assert bounded_timeout(None) is None
    with call_deadline(0.5):
        assert 0 < bounded_timeout(2.0) <= 0.5  # type: ignore[operator]
        assert 0 < bounded_timeout(None) <= 0.5  # type: ignore[operator]
        assert bounded_timeout(0.1) == 0.1
    with call_deadline(-1.0):  # already past: calls fail at once rather than start
        assert bounded_timeout(2.0) == 0.0
    # Outside a served call nothing is shortened.
    assert bounded_timeout(2.0) == 2.0


async def test_an_internal_call_ends_with_the_call_being_served(
    start_probe: ProbeFactory, telemetry: Telemetry
) -> None:
    probe = await start_probe()
    channel = internal_channel(probe.target, internal_token="t", telemetry=telemetry)
    block = channel.unary_unary(f"/{PROBE_SERVICE}/Block")
    # As inside a handler whose client gave it 0.3 s: the 30 s the code asks for must not outlive the caller.
    with call_deadline(0.3), pytest.raises(grpc.aio.AioRpcError) as error:
        async with asyncio.timeout(10):
            await block(b"", timeout=30)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await channel.close()
