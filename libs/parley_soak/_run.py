"""Runs one soak: the local stack up, the soak, the stack down (always), the report."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

from parley_soak._soak import Soak, SoakConfig, SoakReport
from parley_soak._stack import LocalStack


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_soak(config: SoakConfig, progress: Callable[[str], None] = _stderr) -> SoakReport:
    """Starts a local stack (Redis and every service as processes, two relays), soaks it, and stops it.

    Args:
        config: duration, seed, rate and fault spacing.
        progress: where progress lines go.
    """
    stack = LocalStack()
    started = time.monotonic()
    progress(f"seed {config.seed}: starting Redis (append-only) and the services, two relays")
    try:
        await asyncio.to_thread(stack.start)
        progress(f"stack up in {time.monotonic() - started:.1f} s; soaking for {config.seconds:.0f} s")
        return await Soak(stack, config, progress).run()
    finally:
        await asyncio.to_thread(stack.stop)
