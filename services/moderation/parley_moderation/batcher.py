"""Send checks of concurrent calls, sent to Redis together.

Alone, every ``CheckSend`` call pays a Redis round trip and redis-py's cost of one pipeline for a single send.
Instead, checks asked for while a pipeline is in flight wait and go out together in the next one, through the
store's ``check_send_many``, which decides a sequence of sends exactly as if one by one. The decisions and the state
left behind are therefore those of the sends one by one in the order they were asked for (a caller's sends stay
together, in their order). Nothing waits for company: with no pipeline in flight, a check goes out at once, so an
idle service answers after one round trip as before, and a busy one after the pipeline in flight and its own
(unless more than ``max_batch`` sends are waiting, when the longest-waiting go first).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import context as otel_context

from parley_moderation.model import SendAttempt, SendChecks
from parley_runtime.errors import dependency_unavailable


class SendCheckStore(Protocol):
    """The part of :class:`~parley_moderation.store.ModerationStore` the batcher needs."""

    async def check_send_many(self, attempts: Sequence[SendAttempt], *, now_ms: int) -> list[SendChecks]:
        """Runs the checks of each send, in order, as if each were checked alone after the one before."""


@dataclass(slots=True)
class _Waiting:
    """One caller's sends, where their checks go, and the caller's trace (for the pipeline's Redis span)."""

    attempts: Sequence[SendAttempt]
    found: asyncio.Future[list[SendChecks]]
    trace: otel_context.Context


class SendCheckBatcher:
    """Runs the checks of concurrent callers' sends in shared pipelines, in the order they were asked for.

    Args:
        store: moderation storage; its ``check_send_many`` runs each shared pipeline.
        max_batch: most sends per shared pipeline (a caller's sends are never split, so one caller with more goes
            out alone).
        clock: seconds since the epoch (the contact times the store records).
    """

    def __init__(self, store: SendCheckStore, *, max_batch: int, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._max_batch = max_batch
        self._clock = clock
        self._waiting: deque[_Waiting] = deque()
        self._runner: asyncio.Task[None] | None = None

    async def check_send_many(self, attempts: Sequence[SendAttempt]) -> list[SendChecks]:
        """Checks ``attempts`` as the store's ``check_send_many`` would, after every check asked for before.

        Args:
            attempts: the sends, in the order their tokens are taken.

        Returns:
            What the checks of each send found, one per attempt, in order.

        Raises:
            Exception: whatever the shared pipeline raised (a Redis failure), to every caller it served;
                ``ParleyError`` UNAVAILABLE / DEPENDENCY_UNAVAILABLE when the service stops before it ran.
        """
        if not attempts:
            return []
        found: asyncio.Future[list[SendChecks]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(attempts, found, otel_context.get_current()))
        if self._runner is None:
            # A task of its own, not the first caller's: a caller cancelled (its deadline passed) must not cancel
            # the checks of the others it would have carried. An empty context: the runner outlives that caller, so
            # it must not keep the caller's span, deadline or principal as its own.
            self._runner = asyncio.create_task(
                self._run_while_waiting(), name="moderation-send-checks", context=contextvars.Context()
            )
        return await found

    async def _run_while_waiting(self) -> None:
        wave: list[_Waiting] = []
        try:
            while self._waiting:
                wave = self._next_wave()
                if wave:
                    await self._run(wave)
                wave = []
        except asyncio.CancelledError:
            # The service is stopping: nobody may wait forever for a decision.
            _fail([*wave, *self._waiting], dependency_unavailable("moderation is stopping; retry"))
            self._waiting.clear()
            raise
        finally:
            self._runner = None

    def _next_wave(self) -> list[_Waiting]:
        """The callers whose checks go in the next pipeline: the longest-waiting ones, up to ``max_batch`` sends."""
        wave: list[_Waiting] = []
        size = 0
        while self._waiting:
            waiting = self._waiting[0]
            if waiting.found.done():  # cancelled before its checks went out: they never will
                self._waiting.popleft()
                continue
            if wave and size + len(waiting.attempts) > self._max_batch:
                break
            wave.append(self._waiting.popleft())
            size += len(waiting.attempts)
        return wave

    async def _run(self, wave: Sequence[_Waiting]) -> None:
        attempts = wave[0].attempts if len(wave) == 1 else [attempt for waiting in wave for attempt in waiting.attempts]
        # The pipeline's Redis span (where traced) joins the trace of the caller that waited longest.
        token = otel_context.attach(wave[0].trace)
        try:
            found = await self._store.check_send_many(attempts, now_ms=int(self._clock() * 1000))
        except Exception as error:  # every caller of the pipeline gets what it met
            _fail(wave, error)
            return
        finally:
            otel_context.detach(token)
        start = 0
        for waiting in wave:
            end = start + len(waiting.attempts)
            if not waiting.found.done():
                waiting.found.set_result(found[start:end])
            start = end


def _fail(waiting: Sequence[_Waiting], error: Exception) -> None:
    for each in waiting:
        if not each.found.done():
            each.found.set_exception(error)
