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

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from opentelemetry import context as otel_context

from parley_moderation.model import SendAttempt, SendChecks
from parley_runtime.batching import Coalescer


class SendCheckStore(Protocol):
    """The part of :class:`~parley_moderation.store.ModerationStore` the batcher needs."""

    async def check_send_many(self, attempts: Sequence[SendAttempt], *, now_ms: int) -> list[SendChecks]:
        """Runs the checks of each send, in order, as if each were checked alone after the one before."""


class _Asked(NamedTuple):
    """One caller's sends and the caller's trace (for the pipeline's Redis span)."""

    attempts: Sequence[SendAttempt]
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
        self._clock = clock
        self._waves = Coalescer(
            self._run, name="moderation-send-checks", max_wave=max_batch, weight=lambda asked: len(asked.attempts)
        )

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
        return await self._waves.submit(_Asked(attempts, otel_context.get_current()))

    async def _run(self, wave: Sequence[_Asked]) -> list[list[SendChecks]]:
        """One pipeline for the wave's callers, in order; each caller's share of the results."""
        attempts = wave[0].attempts if len(wave) == 1 else [attempt for asked in wave for attempt in asked.attempts]
        # The pipeline's Redis span (where traced) joins the trace of the caller that waited longest.
        token = otel_context.attach(wave[0].trace)
        try:
            found = await self._store.check_send_many(attempts, now_ms=int(self._clock() * 1000))
        finally:
            otel_context.detach(token)
        shares: list[list[SendChecks]] = []
        start = 0
        for asked in wave:
            shares.append(found[start : start + len(asked.attempts)])
            start += len(asked.attempts)
        return shares
