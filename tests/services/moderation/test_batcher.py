"""The send-check batcher on a store whose pipelines the test finishes by hand: what goes out together, in which
order, and what each caller gets back, or which error.

Every wait is bounded, so a caller left waiting fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from parley_moderation.batcher import SendCheckBatcher
from parley_moderation.handler import ModerationLimits
from parley_moderation.model import SendAttempt, SendChecks
from parley_runtime.errors import Code, ParleyError

_SHAPE = ModerationLimits().shape("birdy")
_WAIT_S = 5


def _attempt(index: int) -> SendAttempt:
    return SendAttempt(
        sender=f"username:u{index}@birdy",
        recipient="username:bob@gatekeeper",
        provider_id="birdy",
        fan_out=index + 1,
        shape=_SHAPE,
    )


def _checks_of(attempt: SendAttempt) -> SendChecks:
    """What the fake store finds for a send: its fan-out echoed back, so each result names its send."""
    return SendChecks(
        sender_outcome=0,
        sender_retry_after_ms=attempt.fan_out,
        first_contact=False,
        provider_outcome=0,
        provider_retry_after_ms=0,
        blocked=False,
    )


class _HeldStore:
    """A store whose ``check_send_many`` calls (pipelines) each wait until the test answers or fails them."""

    def __init__(self) -> None:
        self.pipelines: list[list[SendAttempt]] = []
        self._answers: list[asyncio.Future[Exception | None]] = []
        self._arrived = asyncio.Event()

    async def check_send_many(self, attempts: Sequence[SendAttempt], *, now_ms: int) -> list[SendChecks]:
        self.pipelines.append(list(attempts))
        answer: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._answers.append(answer)
        self._arrived.set()
        error = await answer
        if error is not None:
            raise error
        return [_checks_of(attempt) for attempt in attempts]

    async def pipeline(self, number: int) -> list[SendAttempt]:
        """Pipeline ``number`` (from 0), once it went out."""
        async with asyncio.timeout(_WAIT_S):
            while len(self.pipelines) <= number:
                self._arrived.clear()
                await self._arrived.wait()
        return self.pipelines[number]

    def finish(self, number: int, error: Exception | None = None) -> None:
        self._answers[number].set_result(error)


async def _in_flight(batcher: SendCheckBatcher, store: _HeldStore) -> asyncio.Task[list[SendChecks]]:
    """A caller checking ``_attempt(0)``, once its pipeline (the store's first) is out and held."""
    call = asyncio.create_task(batcher.check_send_many([_attempt(0)]))
    await store.pipeline(0)
    return call


async def _settle() -> None:
    """Lets every ready task run up to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_check_with_nothing_in_flight_goes_out_at_once_alone() -> None:
    store = _HeldStore()
    batcher = SendCheckBatcher(store, max_batch=100)
    call = asyncio.create_task(batcher.check_send_many([_attempt(0)]))
    assert await store.pipeline(0) == [_attempt(0)]
    store.finish(0)
    async with asyncio.timeout(_WAIT_S):
        assert await call == [_checks_of(_attempt(0))]
    # Idle again: the next check does not wait for company either.
    call = asyncio.create_task(batcher.check_send_many([_attempt(1)]))
    assert await store.pipeline(1) == [_attempt(1)]
    store.finish(1)
    async with asyncio.timeout(_WAIT_S):
        assert await call == [_checks_of(_attempt(1))]


async def test_checks_asked_for_during_a_pipeline_share_the_next_in_the_order_asked() -> None:
    store = _HeldStore()
    batcher = SendCheckBatcher(store, max_batch=100)
    first = await _in_flight(batcher, store)
    # Three callers while the first pipeline is in flight, one of them with two sends.
    asked = [[_attempt(3)], [_attempt(1), _attempt(4)], [_attempt(2)]]
    calls = [asyncio.create_task(batcher.check_send_many(attempts)) for attempts in asked]
    await _settle()
    assert len(store.pipelines) == 1  # nothing goes out beside the pipeline in flight
    store.finish(0)
    assert await store.pipeline(1) == [_attempt(3), _attempt(1), _attempt(4), _attempt(2)]
    store.finish(1)
    async with asyncio.timeout(_WAIT_S):
        assert await first == [_checks_of(_attempt(0))]
        for call, attempts in zip(calls, asked, strict=True):
            assert await call == [_checks_of(attempt) for attempt in attempts]


async def test_a_pipeline_takes_whole_callers_up_to_the_bound() -> None:
    store = _HeldStore()
    batcher = SendCheckBatcher(store, max_batch=3)
    first = await _in_flight(batcher, store)
    asked = [[_attempt(1), _attempt(2)], [_attempt(3), _attempt(4)], [_attempt(index) for index in range(5, 9)]]
    calls = [asyncio.create_task(batcher.check_send_many(attempts)) for attempts in asked]
    await _settle()
    for number, expected in enumerate(asked, start=1):
        store.finish(number - 1)
        # A caller's sends are never split; one with more than the bound goes out alone.
        assert await store.pipeline(number) == expected
    store.finish(len(asked))
    async with asyncio.timeout(_WAIT_S):
        await first
        for call, attempts in zip(calls, asked, strict=True):
            assert await call == [_checks_of(attempt) for attempt in attempts]


async def test_a_failed_pipeline_fails_each_of_its_callers_and_the_next_one_still_runs() -> None:
    store = _HeldStore()
    batcher = SendCheckBatcher(store, max_batch=100)
    first = await _in_flight(batcher, store)
    shared = [asyncio.create_task(batcher.check_send_many([_attempt(index)])) for index in (1, 2, 3)]
    await _settle()
    store.finish(0)
    await store.pipeline(1)
    later = asyncio.create_task(batcher.check_send_many([_attempt(4)]))
    await _settle()
    store.finish(1, ConnectionError("Redis went away"))
    async with asyncio.timeout(_WAIT_S):
        await first
        for call in shared:
            with pytest.raises(ConnectionError, match="Redis went away"):
                await call
    # The caller that arrived during the failed pipeline is decided in the next one.
    assert await store.pipeline(2) == [_attempt(4)]
    store.finish(2)
    async with asyncio.timeout(_WAIT_S):
        assert await later == [_checks_of(_attempt(4))]


async def test_a_caller_cancelled_before_its_pipeline_goes_out_is_never_checked() -> None:
    store = _HeldStore()
    batcher = SendCheckBatcher(store, max_batch=100)
    first = await _in_flight(batcher, store)
    gone = asyncio.create_task(batcher.check_send_many([_attempt(1)]))
    kept = asyncio.create_task(batcher.check_send_many([_attempt(2)]))
    await _settle()
    gone.cancel()
    await _settle()
    store.finish(0)
    assert await store.pipeline(1) == [_attempt(2)]
    store.finish(1)
    async with asyncio.timeout(_WAIT_S):
        await first
        assert await kept == [_checks_of(_attempt(2))]
    assert gone.cancelled()


async def test_a_caller_cancelled_while_its_pipeline_runs_leaves_the_others_their_answers() -> None:
    store = _HeldStore()
    batcher = SendCheckBatcher(store, max_batch=100)
    first = await _in_flight(batcher, store)
    gone = asyncio.create_task(batcher.check_send_many([_attempt(1)]))
    kept = asyncio.create_task(batcher.check_send_many([_attempt(2)]))
    await _settle()
    store.finish(0)
    assert await store.pipeline(1) == [_attempt(1), _attempt(2)]
    gone.cancel()
    await _settle()
    store.finish(1)
    async with asyncio.timeout(_WAIT_S):
        await first
        assert await kept == [_checks_of(_attempt(2))]


async def test_stopping_fails_every_waiting_caller_instead_of_leaving_it_waiting() -> None:
    store = _HeldStore()
    batcher = SendCheckBatcher(store, max_batch=100)
    in_flight = await _in_flight(batcher, store)
    waiting = asyncio.create_task(batcher.check_send_many([_attempt(1)]))
    await _settle()
    runner = next(task for task in asyncio.all_tasks() if task.get_name() == "moderation-send-checks")
    runner.cancel()
    async with asyncio.timeout(_WAIT_S):
        for call in (in_flight, waiting):
            with pytest.raises(ParleyError) as error:
                await call
            assert error.value.code == Code.UNAVAILABLE
    # A new check starts a new runner.
    call = asyncio.create_task(batcher.check_send_many([_attempt(2)]))
    assert await store.pipeline(1) == [_attempt(2)]
    store.finish(1)
    async with asyncio.timeout(_WAIT_S):
        assert await call == [_checks_of(_attempt(2))]


async def test_no_sends_need_no_pipeline() -> None:
    store = _HeldStore()
    assert await SendCheckBatcher(store, max_batch=100).check_send_many([]) == []
    assert store.pipelines == []
