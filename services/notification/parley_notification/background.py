"""Stopping the service's background loops without cutting a Redis command in half.

Cancelling a task while redis-py is inside a command can leave it waiting for its connection pool, so every loop
here checks a stop flag between commands, and is given time to finish its current one (reads block for at most
``read_block_ms``) before anything is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection


async def finish_or_cancel(tasks: Collection[asyncio.Task[None]], grace_s: float) -> None:
    """Waits up to ``grace_s`` for ``tasks`` to end by themselves, then cancels the rest (briefly awaited).

    Args:
        tasks: loops that were told to stop.
        grace_s: how long they may take to notice.
    """
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pending, timeout=1.0)
