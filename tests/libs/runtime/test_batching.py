"""Concurrent callers sharing round trips (``parley_runtime.batching``): each gets its own answer or failure."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from parley_runtime.batching import Coalescer
from parley_runtime.errors import Code, ParleyError


class Doubler:
    """A wave function that doubles numbers, refuses negative ones, and records its waves; each wave waits for
    ``release`` (when set) so tests can line callers up behind one in flight."""

    def __init__(self) -> None:
        self.waves: list[list[int]] = []
        self.release: asyncio.Event | None = None
        self.failure: Exception | None = None

    async def __call__(self, numbers: Sequence[int]) -> list[int | BaseException]:
        self.waves.append(list(numbers))
        if self.release is not None:
            await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return [ValueError(f"negative: {n}") if n < 0 else 2 * n for n in numbers]


async def test_a_caller_alone_goes_at_once_in_a_wave_of_its_own() -> None:
    run = Doubler()
    coalescer = Coalescer(run, name="test")
    assert await coalescer.submit(21) == 42
    assert await coalescer.submit(4) == 8
    assert run.waves == [[21], [4]]


async def test_callers_arriving_while_a_wave_is_in_flight_share_the_next_one_each_with_its_own_answer() -> None:
    run = Doubler()
    run.release = asyncio.Event()
    coalescer = Coalescer(run, name="test")
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert run.waves == [[1]]  # in flight
    others = [asyncio.create_task(coalescer.submit(n)) for n in range(2, 12)]
    await asyncio.sleep(0)
    run.release.set()
    assert await first == 2
    assert await asyncio.gather(*others) == [2 * n for n in range(2, 12)]
    assert run.waves == [[1], list(range(2, 12))]


async def test_a_refused_request_fails_only_its_caller() -> None:
    run = Doubler()
    run.release = asyncio.Event()
    coalescer = Coalescer(run, name="test")
    blocker = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    calls = [asyncio.create_task(coalescer.submit(n)) for n in (3, -1, 5)]
    await asyncio.sleep(0)
    run.release.set()
    await blocker
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] == 6
    assert outcomes[2] == 10
    assert isinstance(outcomes[1], ValueError)
    assert str(outcomes[1]) == "negative: -1"
    assert run.waves[1] == [3, -1, 5]


async def test_a_failed_round_trip_fails_every_caller_of_its_wave_and_the_next_wave_runs() -> None:
    run = Doubler()
    run.failure = ConnectionError("redis went away")
    coalescer = Coalescer(run, name="test")
    outcomes = await asyncio.gather(*(coalescer.submit(n) for n in range(4)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) and str(o) == "redis went away" for o in outcomes)
    run.failure = None
    assert await coalescer.submit(7) == 14


async def test_a_wave_answering_the_wrong_number_of_requests_fails_its_callers_instead_of_mixing_answers() -> None:
    async def short(numbers: Sequence[int]) -> list[int | BaseException]:
        return [1]

    coalescer = Coalescer(short, name="short")
    outcomes = await asyncio.gather(*(coalescer.submit(n) for n in range(3)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)


async def test_a_caller_cancelled_before_its_wave_starts_is_left_out_of_it() -> None:
    run = Doubler()
    run.release = asyncio.Event()
    coalescer = Coalescer(run, name="test")
    blocker = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    gone = asyncio.create_task(coalescer.submit(99))
    kept = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    gone.cancel()
    run.release.set()
    await blocker
    assert await kept == 2
    assert run.waves == [[0], [1]]


async def test_waves_are_bounded_and_the_rest_go_in_the_next() -> None:
    run = Doubler()
    run.release = asyncio.Event()
    coalescer = Coalescer(run, name="test", max_wave=3)
    blocker = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    calls = [asyncio.create_task(coalescer.submit(n)) for n in range(1, 8)]
    await asyncio.sleep(0)
    run.release.set()
    await blocker
    assert await asyncio.gather(*calls) == [2 * n for n in range(1, 8)]
    assert run.waves == [[0], [1, 2, 3], [4, 5, 6], [7]]


async def test_callers_waiting_when_the_service_stops_are_told_to_retry() -> None:
    run = Doubler()
    run.release = asyncio.Event()
    coalescer = Coalescer(run, name="stopping")
    calls = [asyncio.create_task(coalescer.submit(n)) for n in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    runner = next(task for task in asyncio.all_tasks() if task.get_name() == "stopping")
    runner.cancel()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, ParleyError)
        assert outcome.code == Code.UNAVAILABLE
        assert outcome.reason_name == "DEPENDENCY_UNAVAILABLE"
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_waves_are_bounded_by_weight_and_never_split_a_request() -> None:
    run = Doubler()
    run.release = asyncio.Event()
    coalescer = Coalescer(run, name="test", max_wave=10, weight=lambda n: n)
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(coalescer.submit(n)) for n in (4, 5, 3, 12, 2)]
    await asyncio.sleep(0)
    run.release.set()
    assert await asyncio.gather(first, *waiting) == [2, 8, 10, 6, 24, 4]
    # 4 + 5 fit in 10, 3 does not; 3 alone, then 12 (heavier than the bound) alone, then 2.
    assert run.waves == [[1], [4, 5], [3], [12], [2]]


_CALLER = contextvars.ContextVar("caller", default="none")


async def test_the_waves_do_not_run_in_the_first_callers_context() -> None:
    """The runner outlives the caller that started it: it must not carry that caller's span or deadline."""
    seen: list[str] = []

    async def run(requests: Sequence[int]) -> list[int]:
        seen.append(_CALLER.get())
        return list(requests)

    coalescer = Coalescer(run, name="test")
    _CALLER.set("first caller")
    assert await coalescer.submit(1) == 1
    assert seen == ["none"]
