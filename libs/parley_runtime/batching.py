"""Concurrent callers' small requests sharing one round trip.

A unary call that writes one key to Redis pays a whole round trip for it: a pooled connection, a pipeline, a socket
write that wakes Redis up, a read that wakes this process up. Under load, many calls do that at the same moment.
:class:`Coalescer` lets them share: a request made while a round trip is in flight waits, and every request made
meanwhile goes together in the next one. A caller alone goes at once (the round trip starts in the next turn of
the event loop), so an idle service pays nothing for it, and a busy one pays one round trip per wave of callers
instead of one per caller. Each caller still gets its own answer, or its own failure.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from parley_runtime.errors import dependency_unavailable

_T = TypeVar("_T")
_R = TypeVar("_R")


class Coalescer(Generic[_T, _R]):
    """Runs the requests of concurrent callers together, a wave at a time.

    Args:
        run: does one wave: takes the waiting requests, in the order they were made, and returns one outcome per
            request, in the same order: its answer, or the exception that caller is to get. An exception raised by
            ``run`` itself (a lost connection) fails every request of the wave with it.
        name: the name of the task running the waves (for debugging).
        max_wave: at most this much weight per wave (a request weighs one unless ``weight`` says otherwise); more
            waits for the next. A request heavier than that goes in a wave of its own: requests are never split.
        weight: a request's weight (e.g. how many sends it carries).
    """

    def __init__(
        self,
        run: Callable[[Sequence[_T]], Awaitable[Sequence[_R | BaseException]]],
        *,
        name: str,
        max_wave: int = 1000,
        weight: Callable[[_T], int] | None = None,
    ) -> None:
        self._run = run
        self._name = name
        self._max_wave = max_wave
        self._weight = weight
        self._waiting: list[tuple[_T, asyncio.Future[_R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, request: _T) -> _R:
        """The answer to ``request``, once the wave it goes in has run.

        Raises:
            BaseException: whatever ``run`` gave (or raised) for this request; ParleyError UNAVAILABLE /
                DEPENDENCY_UNAVAILABLE when the service stops before the request ran.
        """
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._runner is None:
            # A task of its own rather than the first caller's: a caller cancelled (its client went away) must not
            # cancel the others' wave with it. An empty context: the runner outlives that caller, so it must not
            # keep the caller's span, deadline or principal as its own.
            self._runner = asyncio.create_task(self._run_waves(), name=self._name, context=contextvars.Context())
        return await future

    async def _run_waves(self) -> None:
        wave: list[tuple[_T, asyncio.Future[_R]]] = []
        try:
            while self._waiting:
                wave = self._next_wave()
                if not wave:
                    continue
                try:
                    outcomes = await self._run([request for request, _ in wave])
                    if len(outcomes) != len(wave):
                        raise RuntimeError(f"{self._name}: {len(outcomes)} outcomes for {len(wave)} requests")
                except Exception as error:  # every caller of the wave gets what the shared round trip met
                    outcomes = [error] * len(wave)
                for (_, future), outcome in zip(wave, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                wave = []
        except asyncio.CancelledError:
            # The service is stopping: nobody may wait forever for a wave that will not run.
            stopping = dependency_unavailable("the service is stopping; retry")
            for _, future in [*wave, *self._waiting]:
                if not future.done():
                    future.set_exception(stopping)
            self._waiting = []
            raise
        finally:
            self._runner = None

    def _next_wave(self) -> list[tuple[_T, asyncio.Future[_R]]]:
        """The longest-waiting requests up to ``max_wave`` weight (at least one), without those whose caller is
        gone (cancelled, its deadline passed): they need nothing done."""
        wave: list[tuple[_T, asyncio.Future[_R]]] = []
        taken = total = 0
        for request, future in self._waiting:
            weight = 1 if self._weight is None else self._weight(request)
            if future.done():
                taken += 1
                continue
            if wave and total + weight > self._max_wave:
                break
            wave.append((request, future))
            total += weight
            taken += 1
        del self._waiting[:taken]
        return wave
