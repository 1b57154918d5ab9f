"""The deadline of the RPC being served, so the calls it makes to other services end no later than it does.

A client's deadline is honoured by gRPC itself (the handler is cancelled when it passes); what gRPC cannot know
is that the calls a handler makes on its behalf are worth nothing after that moment. The error-mapping
interceptor records the deadline of each unary call here, and Parley's internal channels
(:mod:`parley_runtime.clients`) shorten each outgoing call's timeout to what is left of it.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("parley_deadline", default=None)


@contextlib.contextmanager
def call_deadline(time_remaining_s: float | None) -> Iterator[None]:
    """Within the block, outgoing calls end by the served call's deadline.

    Args:
        time_remaining_s: ``ServicerContext.time_remaining()`` of the served call; None when it has no deadline.
    """
    token = _deadline.set(None if time_remaining_s is None else time.monotonic() + time_remaining_s)
    try:
        yield
    finally:
        _deadline.reset(token)


def bounded_timeout(timeout_s: float | None) -> float | None:
    """``timeout_s`` shortened to what is left of the served call's deadline (never below zero)."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout_s
    left = max(0.0, deadline - time.monotonic())
    return left if timeout_s is None else min(timeout_s, left)
