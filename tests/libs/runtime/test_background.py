"""Background tasks stop for good, even when a library swallows the first cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from parley_runtime.background import cancel_and_wait


async def _swallows(times: int, attempts: list[int], released: asyncio.Event | None = None) -> None:
    """Like redis-py reconnecting: a cancellation arriving mid-command is lost ``times`` times."""
    while released is None or not released.is_set():
        attempts.append(1)
        if len(attempts) > times:
            await asyncio.sleep(3600)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


async def test_a_task_that_swallows_cancellations_is_cancelled_until_it_ends() -> None:
    attempts: list[int] = []
    task = asyncio.create_task(_swallows(2, attempts))
    await asyncio.sleep(0)
    await cancel_and_wait([task, None])
    assert task.cancelled()
    assert len(attempts) == 3


async def test_a_task_that_never_ends_is_left_behind_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []
    released = asyncio.Event()
    task = asyncio.create_task(_swallows(10**9, attempts, released), name="stubborn")
    await asyncio.sleep(0)
    await cancel_and_wait([task], patience_s=0.3)
    assert not task.done()
    assert len(attempts) > 1
    assert "stubborn did not stop" in caplog.text
    released.set()
    task.cancel()
    await task
