"""Stopping the service's background loops without cutting a Redis command in half.

Cancelling a task while redis-py is inside a command can leave it waiting for its connection pool, so every loop
here checks a stop flag between commands, and is given time to finish its current one (reads block for at most
``read_block_ms``) before anything is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from parley_runtime.background import cancel_and_wait


async def finish_or_cancel(tasks: Collection[asyncio.Task[None]], grace_s: float) -> None:
    """Waits up to ``grace_s`` for ``tasks`` to end by themselves, then cancels the rest (for at most a second).

    Args:
        tasks: loops that were told to stop.
        grace_s: how long they may take to notice.
    """
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    await cancel_and_wait(pending, patience_s=1.0)
