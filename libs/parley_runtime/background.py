"""Stopping a service's background tasks for good.

redis-py can swallow a cancellation that arrives while it is reading or reconnecting: the task then simply goes
on with its next command, and a plain ``task.cancel(); await task`` waits forever (a shutdown that never ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

_log = logging.getLogger(__name__)

_RETRY_S = 0.1


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None] | None], *, patience_s: float = 5.0) -> None:
    """Cancels ``tasks`` and waits until they end, cancelling again every 0.1 s while one keeps running.

    Args:
        tasks: the tasks to stop (None entries, e.g. never started, are skipped).
        patience_s: how long to keep trying; a task still running after that is logged and left behind.
    """
    started = [task for task in tasks if task is not None]
    pending = {task for task in started if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RETRY_S)
    for task in started:
        if task in pending:
            _log.warning("background task %s did not stop", task.get_name())
        elif not task.cancelled() and task.exception() is not None:
            _log.warning("background task %s had failed: %r", task.get_name(), task.exception())
